"""The graph an export holds: normalised images (and encoded metadata) → class probabilities.

One :class:`ProbabilityGraph` wraps the nets of one checkpoint, or of a mean ensemble whose
members preprocess identically; the probabilities are the mean of the members' softmaxes, as
``evaluate.py`` combines them (``ensemble=mean``).
"""

from __future__ import annotations

import torch
from torch import nn

from lesion.models.net import LesionNet


class ProbabilityGraph(nn.Module):
    """Class probabilities of the mean of ``nets``' softmaxes.

    Args:
        nets: one net, or the members of a mean ensemble (same classes and inputs).
    """

    def __init__(self, nets: list[LesionNet]):
        super().__init__()
        self.nets = nn.ModuleList(nets)

    @property
    def metadata_features(self) -> int:
        """Width D of the encoded metadata input (0: the graph takes images only)."""
        return self.nets[0].metadata_features

    def forward(self, image: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        """Args: image: B×3×H×W normalised; metadata: B×D encoded, for nets with a metadata branch.
        Returns: B×K class probabilities."""
        return torch.stack([net(image, metadata).float().softmax(1) for net in self.nets]).mean(0)

    def example_inputs(self, size: int, batch: int = 2) -> tuple[torch.Tensor, ...]:
        """Inputs of the graph's shapes, for tracing and export."""
        image = torch.zeros(batch, 3, size, size)
        return (image,) if not self.metadata_features else (image, torch.zeros(batch, self.metadata_features))
