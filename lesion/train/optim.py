"""Optimizers and learning-rate schedules by name (``optimizer.name``, ``scheduler.name``).

The cosine schedule spans the epochs of the stage it is built for (``epochs``), so the
SMOTE-Tomek head stage anneals over its own ``head_epochs``, not over the fine-tuning stage's.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
SCHEDULERS = {"cosine": lambda optimizer, epochs: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))}


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: dict) -> torch.optim.Optimizer:
    """The optimizer ``cfg["name"]`` with the remaining entries as its arguments."""
    settings = {k: v for k, v in cfg.items() if k != "name"}
    return OPTIMIZERS[cfg["name"]](params, **settings)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: dict, epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule ``cfg["name"]`` over ``epochs`` epochs (``cosine``: to 0 at the stage's end)."""
    return SCHEDULERS[cfg["name"]](optimizer, epochs)
