"""The Trainer of one training stage, from the ``trainer``, ``callbacks`` and ``logger`` config groups.

Each entry of ``callbacks`` and ``logger`` is a Lightning object named by ``_target_`` in the
user's own config (never in a checkpoint). A stage fills in what depends on it: ``dirpath`` (its
checkpoint folder) for callbacks that have that option, ``version`` (its log sub-folder) for
loggers that have it. Loggers without a ``version`` option (MLflow, W&B: :mod:`lesion.train.tracking`)
are the run's: built once, given the composed config as ``run_config`` when they have that option,
and shared by every stage, so that the run is one run in the tracker. An entry set to null is
left out, and so is early stopping when ``patience`` is null. Checkpoints come from the
``callbacks`` group alone: without a checkpoint callback there, Lightning adds none of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

from lesion.errors import LesionError


def _build(where: str, spec: DictConfig, fix: str, **fill):
    """``instantiate(spec, **fill)``, its failure reported as one line naming ``where``."""
    try:
        return instantiate(spec, **fill)
    except InstantiationException as error:
        cause = error.__cause__ or error
        if isinstance(cause, LesionError):
            raise cause from None
        if isinstance(cause, ImportError):  # Hydra's "Error loading 'x':" names the cause on its next line
            while isinstance(cause.__cause__, ImportError):
                cause = cause.__cause__
            raise LesionError(where, f"cannot be built ({(str(cause).splitlines() or [''])[0][:300]})",
                              f"{fix}, or install the package it needs") from None
        raise LesionError(where, f"Lightning refuses these options ({(str(cause).splitlines() or [''])[0][:300]})",
                          fix) from None


def _filled(spec: DictConfig, **values) -> dict:
    """Of ``values``, those that ``spec`` has as options."""
    return {key: value for key, value in values.items() if key in spec}


def build_callbacks(cfg: DictConfig, checkpoints: Path, stage: str | None = None) -> list[pl.Callback]:
    """The ``callbacks`` group's callbacks, writing their checkpoints to ``checkpoints``, labelled
    ``stage`` where they take a label (the progress lines of a run of several stages)."""
    specs = {name: spec for name, spec in (cfg.callbacks or {}).items() if spec is not None}
    if cfg.patience is None:
        specs.pop("early_stopping", None)
    return [_build(f"callbacks.{name}", spec, f"fix the callbacks.{name}.* override (see conf/callbacks/)",
                   **_filled(spec, dirpath=str(checkpoints), stage=stage))
            for name, spec in specs.items()]


def build_loggers(cfg: DictConfig, version: str) -> list:
    """The ``logger`` group's stage loggers (those with a ``version`` option), logging under ``version``."""
    return [_build(f"logger.{name}", spec, f"fix the logger.{name}.* override (see conf/logger/)",
                   **_filled(spec, version=version))
            for name, spec in (cfg.logger or {}).items() if spec is not None and "version" in spec]


def build_run_loggers(cfg: DictConfig) -> list:
    """The ``logger`` group's run loggers (without a ``version`` option), for every stage of the run."""
    # Not recursive: the config's own _target_ entries (callbacks, trainer) are values to log here.
    fill = {"run_config": OmegaConf.to_container(cfg, resolve=True), "_recursive_": False, "_convert_": "all"}
    return [_build(f"logger.{name}", spec, f"fix the logger.{name}.* override (see conf/logger/)",
                   **(fill if "run_config" in spec else {}))
            for name, spec in (cfg.logger or {}).items() if spec is not None and "version" not in spec]


def build_trainer(cfg: DictConfig, checkpoints: Path, log_version: str, run_loggers: Sequence = (),
                  stage: str | None = None, **overrides) -> pl.Trainer:
    """The configured Trainer of a stage that checkpoints to ``checkpoints`` and logs to ``log_version``.

    Args:
        cfg: the composed ``conf/train.yaml`` config.
        checkpoints: the stage's checkpoint folder.
        log_version: the stage's log sub-folder (``""``: the loggers' own folder).
        run_loggers: the run's loggers (:func:`build_run_loggers`), logging this stage too.
        stage: the stage's label in callbacks that take one, or ``None``.
        overrides: Trainer arguments replacing the configured ones (e.g. the stage's ``max_epochs``).
    """
    callbacks = build_callbacks(cfg, checkpoints, stage)
    loggers = [*build_loggers(cfg, log_version), *run_loggers]
    monitors = [c for c in callbacks if isinstance(c, LearningRateMonitor)]
    if monitors and not loggers:
        raise LesionError("logger", "is empty, and the learning-rate monitor (callbacks.lr_monitor) needs a logger",
                          "keep a logger, or add callbacks.lr_monitor=null")
    checkpointing = any(isinstance(c, ModelCheckpoint) for c in callbacks)
    return _build("trainer", cfg.trainer, "fix the trainer.* override (see conf/trainer/default.yaml)",
                  callbacks=callbacks, logger=loggers or False, enable_checkpointing=checkpointing,
                  default_root_dir=cfg.run_dir, **overrides)


def best_checkpoint(trainer: pl.Trainer) -> str | None:
    """Path of the best checkpoint of a fitted trainer: that of its first checkpoint callback with
    a monitored metric (``None`` when there is none or it saved nothing)."""
    callback = best_callback(trainer)
    return (callback.best_model_path or None) if callback is not None else None


def best_callback(trainer: pl.Trainer) -> ModelCheckpoint | None:
    """The trainer's first checkpoint callback that monitors a metric."""
    return next((c for c in trainer.checkpoint_callbacks if c.monitor is not None), None)
