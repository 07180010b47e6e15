"""The metadata branch of a net: an MLP on the encoded patient metadata (``lesion.data.metadata_features``).

As Gessert et al. (MethodsX 2020), two fully connected layers with ReLU and dropout; their output
is concatenated with the pooled image features before the classifier (baseline head) or enters
the LSTM's initial state (Barata head). Batch normalisation is left out so that a batch of one
image trains, and the branch gives the same output in training and evaluation up to dropout.
"""

from __future__ import annotations

import torch
from torch import nn


class MetadataMLP(nn.Module):
    """``x`` (B×D encoded metadata) → B×``hidden`` features.

    Args:
        features: D, width of the encoded metadata.
        hidden: width of both layers (the features given to the head).
        dropout: dropout after each layer.
    """

    def __init__(self, features: int, hidden: int = 64, dropout: float = 0.3):
        super().__init__()
        self.hidden = hidden
        self.layers = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(dropout),
                                    nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
