"""LesionNet: a ResNet trunk and a head (``lesion.models.heads``), runnable on images or pooled embeddings.

The heads read the feature map F only through its average- and max-pooled vectors, so
``head_from_pooled(*embed(x)) == forward(x)`` up to float rounding. This makes training the head
on SMOTE-Tomek resampled embeddings exact.
"""

from __future__ import annotations

import torch
from torch import nn

from lesion.models.backbone import Backbone


class LesionNet(nn.Module):
    """Backbone + head.

    Args:
        backbone: the ResNet trunk giving F (B×C×h×w).
        head: ``LinearHead`` or ``BarataHead`` (anything with ``steps``, ``steps_from_pooled``
            and ``step_targets``).
    """

    def __init__(self, backbone: Backbone, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: B×3×H×W normalised images. Returns: F, B×C×h×w."""
        return self.backbone(x)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: x: B×3×H×W. Returns: ``(F.mean((2, 3)), F.amax((2, 3)))``, B×C each."""
        fmap = self.forward_features(x)
        return fmap.mean((2, 3)), fmap.amax((2, 3))

    def head_from_pooled(self, avg: torch.Tensor, mx: torch.Tensor) -> torch.Tensor:
        """Args: avg, mx: B×C from ``embed``. Returns: B×K class logits, equal to ``forward(x)``."""
        return self.step_logits_from_pooled(avg, mx)[-1]

    def step_logits(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Args: x: B×3×H×W; targets: B class indices (teacher forcing) or ``None`` (greedy).
        Returns: per-step logits, the last B×K."""
        return self.head.steps(self.forward_features(x), targets)

    def step_logits_from_pooled(self, avg: torch.Tensor, mx: torch.Tensor,
                                targets: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Args: avg, mx: B×C from ``embed``; targets: as in ``step_logits``.
        Returns: per-step logits, equal to ``step_logits`` on the images."""
        return self.head.steps_from_pooled(avg, mx, targets)

    def step_targets(self, targets: torch.Tensor) -> list[torch.Tensor]:
        """Args: targets: B class indices. Returns: per-step target tokens, B each."""
        return self.head.step_targets(targets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: B×3×H×W. Returns: B×K class logits (greedy decoding)."""
        return self.step_logits(x)[-1]
