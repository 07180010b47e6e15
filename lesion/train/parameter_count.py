"""One log line with the parameter counts of the model a training stage fits, once it starts::

    parameters: 23.5 M, 8.9 M trainable

In place of Lightning's model summary table (``trainer.enable_model_summary``), whose FLOPs column and total stay
0: Lightning counts FLOPs only through an example input, which lesion's module does not give. The line reaches
``train.log`` too. With SMOTE-Tomek the head stage's line shows what that stage trains.
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl
from pytorch_lightning.utilities.model_summary import get_human_readable_count

log = logging.getLogger(__name__)


class ParameterCount(pl.Callback):
    """Logs the model's parameters and the trainable ones when fitting starts (rank 0 only).

    Args:
        stage: a label that starts the line (the training stage), or ``None`` for none.
    """

    def __init__(self, stage: str | None = None):
        self.stage = stage

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        total = sum(p.numel() for p in pl_module.parameters())
        trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        log.info("%sparameters: %s, %s trainable", f"{self.stage} " if self.stage else "",
                 get_human_readable_count(total).strip(), get_human_readable_count(trainable).strip())
