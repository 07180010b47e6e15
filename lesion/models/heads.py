"""Classification heads on the backbone's feature map F, runnable on F or on its pooled vectors.

``LinearHead`` (avgpool → dropout → linear, the baseline) and ``BarataHead`` (CBAM channel
attention, then the LSTM decoder of Barata et al., "Explainable skin lesion diagnosis using
taxonomies", Pattern Recognition 110 (2021), flat or hierarchical).

Both read F only through ``avg = F.mean((2, 3))`` and ``mx = F.amax((2, 3))``, and every
attention weight is positive and constant over positions, so ``steps_from_pooled(avg, mx)``
equals ``steps(F)`` up to float rounding. A spatial attention over positions would break it.

Heads return per-step logits (one list entry per decoding step; the last entry is the B×K class
logits) and per-step targets, so the loss is the mean of per-step cross-entropies for every head.

With patient metadata (``metadata_width > 0``) both also take ``metadata``, the B×M output of the
net's metadata branch (``lesion.models.metadata``): the baseline concatenates it with the pooled
features before its linear layer, the Barata head with ``f`` before the LSTM's initial state.
It is per image, not per position, so the equality above still holds.
"""

from __future__ import annotations

import torch
from torch import nn

from lesion.models.attention import ChannelAttention
from lesion.models.decoder import LSTMDecoder


class LinearHead(nn.Module):
    """Baseline head: avgpool (with the metadata features, if any) → dropout → linear, one step.

    Args:
        channels: C, channels of the feature map.
        num_classes: K.
        dropout: dropout before the linear layer.
        metadata_width: M, width of the metadata features (0: none).
    """

    def __init__(self, channels: int, num_classes: int, dropout: float = 0.5, metadata_width: int = 0):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(channels + metadata_width, num_classes)

    def forward(self, avg: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        """Args: avg: B×C average-pooled features; metadata: B×M or ``None``. Returns: B×K logits."""
        return self.fc(self.drop(avg if metadata is None else torch.cat([avg, metadata], 1)))

    def steps(self, fmap: torch.Tensor, targets: torch.Tensor | None = None,
              metadata: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Args: fmap: F, B×C×h×w; targets: unused (one step); metadata: B×M or ``None``.
        Returns: ``[B×K logits]``."""
        return [self(fmap.mean((2, 3)), metadata)]

    def steps_from_pooled(self, avg: torch.Tensor, mx: torch.Tensor, targets: torch.Tensor | None = None,
                          metadata: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Args: avg, mx: B×C pooled features (mx unused); targets: unused; metadata: B×M or ``None``.
        Returns: ``[B×K]``."""
        return [self(avg, metadata)]

    def step_targets(self, targets: torch.Tensor) -> list[torch.Tensor]:
        """Args: targets: B class indices. Returns: ``[targets]``."""
        return [targets]


class BarataHead(nn.Module):
    """CBAM channel attention on F, then the (flat or hierarchical) LSTM decoder.

    Args:
        channels: C, channels of the feature map.
        paths: per-class token path, see ``LSTMDecoder``.
        hidden_size, embed_dim, dropout: see ``LSTMDecoder``.
        rd_ratio: reduction ratio of both channel attentions.
        metadata_width: M, width of the metadata features entering the initial state (0: none).
    """

    def __init__(
        self,
        channels: int,
        paths: list[list[int]],
        hidden_size: int = 512,
        embed_dim: int = 128,
        rd_ratio: float = 1 / 16,
        dropout: float = 0.5,
        metadata_width: int = 0,
    ):
        super().__init__()
        self.attention = ChannelAttention(channels, rd_ratio)
        self.decoder = LSTMDecoder(channels, paths, hidden_size, embed_dim, rd_ratio, dropout, metadata_width)

    def steps(self, fmap: torch.Tensor, targets: torch.Tensor | None = None,
              metadata: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Args: fmap: F, B×C×h×w; targets: B class indices (teacher forcing) or ``None``;
        metadata: B×M or ``None``. Returns: L per-step logits, the last B×K."""
        return self.decoder.steps(self.attention(fmap), targets, metadata)

    def steps_from_pooled(self, avg: torch.Tensor, mx: torch.Tensor, targets: torch.Tensor | None = None,
                          metadata: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``steps`` from ``avg = F.mean((2, 3))``, ``mx = F.amax((2, 3))`` (B×C each), exactly."""
        return self.decoder.steps_from_pooled(*self.attention.pooled(avg, mx), targets, metadata)

    def step_targets(self, targets: torch.Tensor) -> list[torch.Tensor]:
        """Args: targets: B class indices. Returns: L tensors of B target tokens."""
        return self.decoder.step_targets(targets)
