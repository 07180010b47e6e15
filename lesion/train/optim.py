"""Optimizers and learning-rate schedules by name (``optimizer.name``, ``scheduler.name``).

The cosine schedule spans the epochs of the stage it is built for (``epochs``), so the
SMOTE-Tomek head stage anneals over its own ``head_epochs``, not over the fine-tuning stage's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# torch.optim classes by name: torch is imported when one is built, so lesion.options reads the names without it.
OPTIMIZERS = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD"}


def _cosine(optimizer: torch.optim.Optimizer, epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    from torch.optim.lr_scheduler import CosineAnnealingLR

    return CosineAnnealingLR(optimizer, T_max=max(1, epochs))


SCHEDULERS = {"cosine": _cosine}


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: dict) -> torch.optim.Optimizer:
    """The optimizer ``cfg["name"]`` with the remaining entries as its arguments."""
    import torch

    settings = {k: v for k, v in cfg.items() if k != "name"}
    return getattr(torch.optim, OPTIMIZERS[cfg["name"]])(params, **settings)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: dict, epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule ``cfg["name"]`` over ``epochs`` epochs (``cosine``: to 0 at the stage's end)."""
    return SCHEDULERS[cfg["name"]](optimizer, epochs)
