"""One log line per training epoch, for logs that are not a terminal (SLURM, ``nohup``).

A progress bar redrawn in place is of no use in a batch job's log file. :class:`EpochProgress`
logs, once an epoch's training and validation are done, one line through :mod:`logging` (so it
reaches the run's ``train.log`` and the console) and on stderr, unless stderr is the file the
console already writes to (a terminal, ``2>&1``, SLURM's default single output file)::

    epoch 3/30 · 41.2 s · 1,830 img/s · train/loss 0.8123 · val/bacc 0.7012

The time is the epoch's wall time, validation included; img/s counts the training images (in the
head stage, embedding rows) of all processes per second of training, validation excluded. A
metric that the epoch did not produce (no validation this epoch, a metric nobody logs) is left
out rather than printed as nan. Under DDP only rank 0 logs.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.data import extract_batch_size

log = logging.getLogger(__name__)

# Metrics that only an epoch with validation produces; otherwise the stale value of an earlier one is there.
_VALIDATION_PREFIX = "val/"


class EpochProgress(pl.Callback):
    """Logs one line per training epoch: epoch, wall time, training throughput and ``metrics``.

    Args:
        metrics: names of logged metrics to show, in this order (those missing from an epoch are left out).
        stage: a label that starts every line (e.g. the training stage), or ``None`` for none.
    """

    def __init__(self, metrics: Sequence[str] = ("train/loss", "val/bacc"), stage: str | None = None):
        self.metrics = list(metrics)
        self.stage = stage
        self._stderr: logging.Handler | None = None
        self._started = 0.0
        self._validation_started = 0.0
        self._validation_seconds = 0.0
        self._validated = False
        self._images = 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Hydra's console handler writes to stdout; the line must reach stderr too, once.
        if stage == "fit" and trainer.is_global_zero and not _reaches_stderr(log) and not _stdout_is_stderr():
            self._stderr = logging.StreamHandler(sys.stderr)
            self._stderr.setFormatter(_console_formatter())
            log.addHandler(self._stderr)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._stderr is not None:
            log.removeHandler(self._stderr)
            self._stderr = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()
        self._validation_seconds, self._validated, self._images = 0.0, False, 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        self._images += extract_batch_size(batch)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation_started = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validation_seconds += time.perf_counter() - self._validation_started
            self._validated = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning calls this after the epoch's validation; every rank takes part in the sum.
        images = int(trainer.strategy.reduce(torch.tensor(self._images, device=pl_module.device), reduce_op="sum"))
        if trainer.is_global_zero:
            log.info("%s", self._line(trainer, time.perf_counter() - self._started, images))

    def _line(self, trainer: pl.Trainer, seconds: float, images: int) -> str:
        epoch = f"epoch {trainer.current_epoch + 1}"
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            epoch += f"/{trainer.max_epochs}"
        fields = [f"{self.stage} {epoch}" if self.stage else epoch, f"{seconds:.1f} s"]
        training_seconds = seconds - self._validation_seconds
        if training_seconds > 0:
            fields.append(f"{images / training_seconds:,.0f} img/s")
        logged = trainer.callback_metrics
        for name in self.metrics:
            if name in logged and (self._validated or not name.startswith(_VALIDATION_PREFIX)):
                fields.append(f"{name} {float(logged[name]):.4f}")
        return " · ".join(fields)


def _reaches_stderr(logger: logging.Logger) -> bool:
    """Whether records of ``logger`` reach a handler writing to ``sys.stderr``."""
    current: logging.Logger | None = logger
    while current is not None:
        if any(getattr(handler, "stream", None) is sys.stderr for handler in current.handlers):
            return True
        current = current.parent if current.propagate else None
    return False


def _stdout_is_stderr() -> bool:
    """Whether stdout and stderr are one file (a terminal, ``2>&1``): a line on both would show twice."""
    try:
        return os.path.samestat(os.fstat(sys.stdout.fileno()), os.fstat(sys.stderr.fileno()))
    except (AttributeError, OSError, ValueError):  # replaced streams without a file descriptor
        return False


def _console_formatter() -> logging.Formatter | None:
    """The formatter of the root logger's first console handler (so stderr's lines look like stdout's)."""
    consoles = [h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler]
    return consoles[0].formatter if consoles else None
