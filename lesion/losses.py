"""Classification losses: cross-entropy, class-weighted cross-entropy and softmax focal loss.

Focal loss: Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, in its multi-class
softmax form with a per-class ``alpha`` vector.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lesion.errors import LesionError

WEIGHT_KEYS = ("weight", "alpha")


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


def inverse_frequency(counts: Sequence[int]) -> list[float]:
    """Class weights ``N / (K · n_c)``; a class without samples gets weight 0.

    Args:
        counts: training images per class (K,).

    Returns:
        K weights; classes of average size get 1.
    """
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.tolist()


CLASS_WEIGHTINGS = {"inverse_frequency": inverse_frequency}


def resolve_class_weights(loss_cfg: dict, counts: Sequence[int]) -> dict:
    """Replace a named weighting (e.g. ``weight: inverse_frequency``) by its list of floats.

    Args:
        loss_cfg: the loss config as a plain dict (``_target_`` plus arguments).
        counts: training images per class.

    Returns:
        A copy of ``loss_cfg`` whose ``weight`` / ``alpha`` entries are lists of floats or ``None``.
    """
    resolved = dict(loss_cfg)
    for key in WEIGHT_KEYS:
        value = resolved.get(key)
        if isinstance(value, str):
            if value not in CLASS_WEIGHTINGS:
                raise LesionError(f"loss.{key}", f"unknown class weighting '{value}'",
                                  f"use one of {', '.join(CLASS_WEIGHTINGS)} or a list of {len(counts)} floats")
            resolved[key] = CLASS_WEIGHTINGS[value](counts)
        elif value is not None and len(value) != len(counts):
            raise LesionError(f"loss.{key}", f"has {len(value)} entries for {len(counts)} classes",
                              "give one weight per class in class order")
    return resolved
