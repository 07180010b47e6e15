"""LesionNet: a ResNet trunk and a head (``lesion.models.heads``), runnable on images or pooled embeddings.

The heads read the feature map F only through its average- and max-pooled vectors, so
``head_from_pooled(*embed(x)) == forward(x)`` up to float rounding, and with patient metadata
``head_from_pooled(*embed(x), meta) == forward(x, meta)``. This makes training the head on
SMOTE-Tomek resampled embeddings (and metadata) exact.
"""

from __future__ import annotations

import torch
from torch import nn

from lesion.models.backbone import Backbone
from lesion.models.metadata import MetadataMLP


class LesionNet(nn.Module):
    """Backbone + head, and optionally a metadata branch whose features the head also reads.

    Args:
        backbone: the ResNet trunk giving F (B×C×h×w).
        head: ``LinearHead`` or ``BarataHead`` (anything with ``steps``, ``steps_from_pooled``
            and ``step_targets``), built with ``metadata_width = metadata.hidden`` when
            ``metadata`` is given.
        metadata: the branch on the encoded patient metadata, or ``None`` (images only).
    """

    def __init__(self, backbone: Backbone, head: nn.Module, metadata: MetadataMLP | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.metadata = metadata

    @property
    def metadata_features(self) -> int:
        """Width D of the encoded metadata the net takes (0: none)."""
        return 0 if self.metadata is None else self.metadata.layers[0].in_features

    def _metadata(self, metadata: torch.Tensor | None) -> torch.Tensor | None:
        """The metadata branch's B×M features of B×D encoded metadata; refuses a missing or extra input."""
        if (metadata is None) != (self.metadata is None):
            raise ValueError("this net takes patient metadata" if metadata is None else
                             "this net takes no patient metadata")
        if metadata is None:
            return None
        if metadata.ndim != 2 or metadata.shape[1] != self.metadata_features:
            raise ValueError(f"this net takes B×{self.metadata_features} encoded metadata, not {tuple(metadata.shape)}")
        return self.metadata(metadata)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: B×3×H×W normalised images. Returns: F, B×C×h×w."""
        return self.backbone(x)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: x: B×3×H×W. Returns: ``(F.mean((2, 3)), F.amax((2, 3)))``, B×C each."""
        fmap = self.forward_features(x)
        return fmap.mean((2, 3)), fmap.amax((2, 3))

    def head_from_pooled(self, avg: torch.Tensor, mx: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        """Args: avg, mx: B×C from ``embed``; metadata: B×D encoded or ``None``.
        Returns: B×K class logits, equal to ``forward(x, metadata)``."""
        return self.step_logits_from_pooled(avg, mx, None, metadata)[-1]

    def step_logits(self, x: torch.Tensor, targets: torch.Tensor | None = None,
                    metadata: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Args: x: B×3×H×W; targets: B class indices (teacher forcing) or ``None`` (greedy);
        metadata: B×D encoded metadata (nets with a metadata branch) or ``None``.
        Returns: per-step logits, the last B×K."""
        return self.head.steps(self.forward_features(x), targets, self._metadata(metadata))

    def step_logits_from_pooled(self, avg: torch.Tensor, mx: torch.Tensor, targets: torch.Tensor | None = None,
                                metadata: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Args: avg, mx: B×C from ``embed``; targets, metadata: as in ``step_logits``.
        Returns: per-step logits, equal to ``step_logits`` on the images."""
        return self.head.steps_from_pooled(avg, mx, targets, self._metadata(metadata))

    def step_targets(self, targets: torch.Tensor) -> list[torch.Tensor]:
        """Args: targets: B class indices. Returns: per-step target tokens, B each."""
        return self.head.step_targets(targets)

    def forward(self, x: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        """Args: x: B×3×H×W; metadata: B×D encoded metadata or ``None``. Returns: B×K class logits (greedy)."""
        return self.step_logits(x, None, metadata)[-1]
