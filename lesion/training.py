"""``run(cfg)``: one training run from a composed config (called by ``train.py`` and tests)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from lesion.data.layouts import LAYOUTS
from lesion.errors import LesionError
from lesion.files import write_json
from lesion.losses import resolve_class_weights
from lesion.module import LesionClassifier, build_net

log = logging.getLogger(__name__)

MONITOR = "val/bacc"


def _container(cfg: DictConfig | None) -> dict | None:
    return None if cfg is None else OmegaConf.to_container(cfg, resolve=True)


def _callbacks(run_dir: Path, patience: int | None) -> list[pl.Callback]:
    """Best checkpoint on ``val/bacc`` (listed first), latest checkpoint, early stopping."""
    checkpoints = run_dir / "checkpoints"
    callbacks: list[pl.Callback] = [
        ModelCheckpoint(dirpath=checkpoints, filename="best", monitor=MONITOR, mode="max",
                        save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False),
        # A monitored callback refreshes last.ckpt only on improvement; this one every epoch.
        ModelCheckpoint(dirpath=checkpoints, monitor=None, save_top_k=0, save_last=True,
                        enable_version_counter=False),
    ]
    if patience is not None:
        callbacks.append(EarlyStopping(monitor=MONITOR, mode="max", patience=patience))
    return callbacks


def _log_version(run_dir: Path, resuming: bool) -> str:
    """Log sub-folder: ``logs/`` itself, or ``logs/resume_<k>/`` so a resumed run keeps the history."""
    if not resuming:
        return ""
    return f"resume_{len(list((run_dir / 'logs').glob('resume_*'))) + 1}"


def run(cfg: DictConfig) -> dict:
    """Train, checkpoint and test one configuration.

    Args:
        cfg: the composed ``conf/train.yaml`` config.

    Returns:
        The test metrics (also written to ``<run_dir>/test_metrics.json``).
    """
    _check_ckpt_path(cfg.ckpt_path)
    if cfg.seed is not None:
        pl.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.run_dir)
    layout = LAYOUTS[cfg.dataset.layout]
    classes, taxonomy = list(layout.classes), layout.taxonomy()

    model_cfg = _container(cfg.model)
    net = build_net(model_cfg, classes, taxonomy)
    mean, std = list(net.backbone.mean), list(net.backbone.std)
    datamodule = instantiate(cfg.dataset, mean=mean, std=std, seed=cfg.seed or 0, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    counts = list(datamodule.class_counts(datamodule.train_set).values())

    module = LesionClassifier(
        net=net, model=model_cfg, loss=resolve_class_weights(_container(cfg.loss), counts),
        optimizer=_container(cfg.optimizer), scheduler=_container(cfg.scheduler),
        classes=classes, taxonomy=taxonomy, mean=mean, std=std,
        image_size=cfg.dataset.image_size, dataset=_container(cfg.dataset),
    )
    callbacks = _callbacks(run_dir, cfg.patience)
    version = _log_version(run_dir, resuming=cfg.ckpt_path is not None)
    loggers = [CSVLogger(run_dir, name="logs", version=version),
               TensorBoardLogger(run_dir, name="logs", version=version)]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, default_root_dir=run_dir)

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    best = callbacks[0].best_model_path
    if not best:
        log.warning("no checkpoint was saved (fast_dev_run?): testing the current weights")
    trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
    results = module.results["test"]
    if trainer.is_global_zero:
        write_json(run_dir / "test_metrics.json", results)
        log.info("test: bacc %.4f, auc_macro %.4f → %s", results["bacc"], results["auc_macro"],
                 run_dir / "test_metrics.json")
    return results


def _check_ckpt_path(path: str | None) -> None:
    """Fail early on ``ckpt_path=PATH`` that does not exist (``last`` is resolved by Lightning)."""
    if path not in (None, "last", "best") and not Path(path).is_file():
        raise LesionError("ckpt_path", f"checkpoint {path} not found",
                          "pass an existing .ckpt file, or ckpt_path=last with hydra.run.dir=<the run to resume>")
