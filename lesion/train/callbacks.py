"""Callbacks of a training run beyond Lightning's own: checkpoints that stay in their run, interruption, EMA.

:class:`RunCheckpoint` is a ``ModelCheckpoint`` whose restored paths cannot leave its folder.
:class:`EMA` is Lightning's ``EMAWeightAveraging`` averaging floating-point state only and keeping a
checkpoint's averaged weights when it is tested.

Interruption: a run stopped at any moment resumes with ``ckpt_path=last``.

Cluster schedulers pre-empt a job with SIGTERM and, after a grace period, SIGKILL. Lightning
turns SIGTERM into a ``SIGTERMException`` after the current batch; :class:`Interruption` then
saves the progress so far to ``last.ckpt``, logs how to resume, and ``train.py`` exits with
:data:`EXIT_STATUS`. Against SIGKILL, which nothing can catch, every checkpoint is written to a
temporary sibling and renamed over the old one, so ``last.ckpt`` is always whole.

Caveats: a mid-epoch checkpoint resumes the epoch with the batches still owed, drawn from a fresh
shuffle (the DataLoader position is not saved), and that epoch's ``train/*`` metrics cover only
the batches run after resuming. SIGTERM during validation saves nothing (Lightning cannot resume
half-way through it), so that epoch's training is repeated. Lightning writes each logged row at
once, so a SIGKILL while an epoch's checkpoints are being written leaves that epoch's ``val/*`` row
in the log of the killed part and again in the resumed part's.
"""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import EMAWeightAveraging, ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lesion.files import atomic_path

log = logging.getLogger(__name__)

# 128 + SIGTERM: what a shell reports for a process that SIGTERM ended, saved or not.
EXIT_STATUS = 143


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary sibling of the checkpoint, then rename it over the old one.

    Lightning's own save stages the file in the system temporary folder; moving it from there to
    another filesystem is a copy that a kill can cut short, leaving a truncated ``last.ckpt``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


def resume_command(run_dir: Path, checkpoint: Path) -> str:
    """The command line that resumes a run from ``checkpoint``: ``python train.py …`` in a clone,
    ``lesion-train …`` where the installed command started the run."""
    program = Path(sys.argv[0]).name
    command = f"python {program}" if program.endswith(".py") else program
    overrides = ["<same overrides>"]
    if HydraConfig.initialized():
        overrides = [shlex.quote(o) for o in HydraConfig.get().overrides.task if not o.startswith("ckpt_path=")]
    ckpt = "last" if checkpoint == run_dir / "checkpoints" / "last.ckpt" else shlex.quote(str(checkpoint))
    return " ".join([command, *overrides, f"ckpt_path={ckpt}",
                     f"hydra.run.dir={shlex.quote(str(run_dir))}"])


class Interruption(pl.Callback):
    """Saves ``<dirpath>/last.ckpt`` on SIGTERM; makes every checkpoint write atomic.

    Args:
        dirpath: the folder of the run's ``last.ckpt``.
    """

    def __init__(self, dirpath: str | Path):
        self.dirpath = Path(dirpath)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Here rather than Trainer(plugins=…): every trainer built with this callback gets atomic writes.
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if trainer.is_global_zero:  # temporary files of a save cut short by SIGKILL (as large as a checkpoint)
            for partial in self.dirpath.glob(".*.ckpt.*.tmp"):
                partial.unlink(missing_ok=True)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        last = self.dirpath / "last.ckpt"
        # Lightning cannot resume half-way through validation: then last.ckpt stays the previous epoch's.
        save = trainer.state.fn == TrainerFn.FITTING and trainer.training and not trainer.fast_dev_run
        if save:
            trainer.save_checkpoint(last, weights_only=False)
        if not trainer.is_global_zero:
            return
        where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
        if last.is_file():
            log.warning("stopped by SIGTERM at %s: %s %s — resume with: %s", where,
                        "saved" if save else "outside training steps, nothing saved; resume from", last,
                        resume_command(Path(trainer.default_root_dir), last))
        else:
            log.warning("stopped by SIGTERM at %s, before the first checkpoint — start the run again", where)


# What a weights-only checkpoint keeps of what Lightning writes: the weights and what rebuilds the module
# around them. The module's own entries (its validation BACC) are added after the callbacks' hooks.
MODEL_ENTRIES = ("state_dict", "hyper_parameters", "hparams_name", "epoch", "global_step", "pytorch-lightning_version")


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose restored state can only name files in its own folder, and whose
    ``save_weights_only`` files hold the weights that the callbacks give a checkpoint.

    Lightning restores the best/last checkpoint paths from the file it resumes, then tests the
    best one and deletes superseded ones. Each restored path is replaced by the file of the same
    name in this callback's ``dirpath``: a resumed checkpoint cannot point the run at other files,
    and a run directory copied elsewhere resumes with its own checkpoints.

    Lightning writes a ``save_weights_only`` checkpoint without the callbacks' checkpoint hooks, so
    :class:`EMA` could not put there the averaged weights that validation scored. Here it is made
    whole, hooks included, and then keeps :data:`MODEL_ENTRIES` only.
    """

    _weights_only_save = False

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        if not self.save_weights_only:
            super()._save_checkpoint(trainer, filepath)
            return
        self.save_weights_only, self._weights_only_save = False, True
        try:
            super()._save_checkpoint(trainer, filepath)
        finally:
            self.save_weights_only, self._weights_only_save = True, False

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        # Checkpoint callbacks come last (Lightning moves them there): every other callback's hook has run.
        if self._weights_only_save:
            for key in [k for k in checkpoint if k not in MODEL_ENTRIES]:
                del checkpoint[key]

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's key, so checkpoints written with it resume their best/last state here.
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict) -> None:
        def here(path: str | None) -> str:
            name = Path(str(path)).name if path else ""
            return str(Path(self.dirpath) / name) if name not in ("", ".", "..") else ""

        relocated = {**state_dict, "dirpath": self.dirpath,
                     "best_model_path": here(state_dict.get("best_model_path")),
                     "kth_best_model_path": here(state_dict.get("kth_best_model_path")),
                     "last_model_path": here(state_dict.get("last_model_path")),
                     "best_k_models": {here(k): v for k, v in (state_dict.get("best_k_models") or {}).items() if here(k)}}
        super().load_state_dict(relocated)


class EMA(EMAWeightAveraging):
    """An exponential moving average of the weights (``callbacks=ema``), as Lightning's ``EMAWeightAveraging``.

    Validation, and so the choice of ``best.ckpt``, runs on the averaged weights; every checkpoint
    holds them as its ``state_dict`` (what evaluation loads) and the training weights beside them,
    so a resumed run continues both. Three differences from Lightning's callback:

    - only floating-point state (weights, BatchNorm statistics) is averaged; integer state, such as
      BatchNorm's step counter or the decoder's taxonomy tables, is the module's own: averaged in
      floating point and cast back, a table entry 3 can come back as 2;
    - it puts the training weights back whenever a checkpoint is loaded, also by
      ``trainer.test(ckpt_path=…)``, which would test those instead of the averaged ones; here they
      are put back only when fitting resumes;
    - it copies the module into the average in ``setup``, which Lightning runs before the module's
      own ``setup``, where ``LesionClassifier`` resolves its loss's class weights; here the copy is
      made once the module is set up (when the fit starts, or when a resumed fit loads its
      checkpoint), so the average holds the same state as the module.

    Args:
        decay: weight of the old average at each step (0.999 averages over about 1000 steps).
        kwargs: the other options of ``EMAWeightAveraging``.
    """

    def __init__(self, decay: float = 0.999, **kwargs: Any):
        super().__init__(decay=decay, **kwargs)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._average_model = None  # a new fit averages anew, from the module once it is set up

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._copy_module(trainer, pl_module)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self._copy_module(trainer, pl_module)
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def _copy_module(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._average_model is None:
            super().setup(trainer, pl_module, "fit")
            if self._average_model.multi_avg_fn is not None:  # AveragedModel would ignore avg_fn
                raise RuntimeError("EMAWeightAveraging now averages with multi_avg_fn: lesion.train.callbacks.EMA "
                                   "must wrap it to keep integer buffers out of the average")
            self._average_model.avg_fn = _floating_point_only(self._average_model.avg_fn)


def _floating_point_only(avg_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
                         ) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``AveragedModel``'s ``avg_fn(average, current, n_averaged)`` applied to floating-point tensors;
    any other tensor takes the module's current value."""

    def average(averaged: torch.Tensor, current: torch.Tensor, n_averaged: torch.Tensor) -> torch.Tensor:
        return avg_fn(averaged, current, n_averaged) if averaged.is_floating_point() else current

    return average
