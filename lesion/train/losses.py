"""Classification losses: cross-entropy, class-weighted cross-entropy and softmax focal loss.

Focal loss: Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, in its multi-class
softmax form with a per-class ``alpha`` vector.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class FocalLoss(nn.Module):
    """Softmax focal loss ``-alpha_y (1 - p_y)^gamma log p_y``.

    Reduced like ``nn.CrossEntropyLoss(weight=alpha)`` (sum divided by the summed ``alpha_y``), so
    ``gamma=0`` equals the weighted cross-entropy exactly.

    Args:
        gamma: focusing parameter (0 = cross-entropy).
        alpha: per-class weights (K,), or ``None`` for 1 everywhere.
    """

    def __init__(self, gamma: float = 2.0, alpha: Sequence[float] | None = None):
        super().__init__()
        self.gamma = gamma
        self.register_buffer("alpha", None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss of logits (B×K) against class indices (B,)."""
        log_p = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
        loss = -((1 - log_p.exp()) ** self.gamma) * log_p
        if self.alpha is None:
            return loss.mean()
        weight = self.alpha[target]
        return (weight * loss).sum() / weight.sum()


class WeightedCrossEntropy(nn.CrossEntropyLoss):
    """``nn.CrossEntropyLoss`` taking the class weights as a plain list (config-friendly)."""

    def __init__(self, weight: Sequence[float] | None = None):
        super().__init__(weight=None if weight is None else torch.as_tensor(weight, dtype=torch.float32))


LOSSES = {"ce": WeightedCrossEntropy, "weighted_ce": WeightedCrossEntropy, "focal": FocalLoss}


def build_loss(cfg: dict) -> nn.Module:
    """The loss registered as ``cfg["name"]``, its class weights resolved to numbers."""
    settings = {k: v for k, v in cfg.items() if k != "name"}
    return LOSSES[cfg["name"]](**settings)

