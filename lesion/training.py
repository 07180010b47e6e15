"""``run(cfg)``: one training run from a composed config (called by ``train.py`` and tests)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from lesion.data.balance import plan_balance
from lesion.data.layouts import LAYOUTS
from lesion.errors import LesionError
from lesion.files import write_atomic, write_json
from lesion.losses import resolve_class_weights
from lesion.module import LesionClassifier, build_net
from lesion.resampled_head import fit_head_on_resampled, load_backbone

log = logging.getLogger(__name__)

MONITOR = "val/bacc"


def _container(cfg: DictConfig | None) -> dict | None:
    return None if cfg is None else OmegaConf.to_container(cfg, resolve=True)


def make_trainer(cfg: DictConfig, run_dir: Path, checkpoints: Path, log_version: str, **overrides) -> pl.Trainer:
    """The configured Trainer with our checkpoints and loggers.

    Callbacks: best checkpoint on ``val/bacc`` (listed first), latest checkpoint every epoch,
    early stopping when ``cfg.patience`` is set. Logs go to ``run_dir/logs/<log_version>``.
    """
    callbacks: list[pl.Callback] = [
        ModelCheckpoint(dirpath=checkpoints, filename="best", monitor=MONITOR, mode="max",
                        save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False),
        # A monitored callback refreshes last.ckpt only on improvement; this one every epoch.
        ModelCheckpoint(dirpath=checkpoints, monitor=None, save_top_k=0, save_last=True,
                        enable_version_counter=False),
    ]
    if cfg.patience is not None:
        callbacks.append(EarlyStopping(monitor=MONITOR, mode="max", patience=cfg.patience))
    loggers = [CSVLogger(run_dir, name="logs", version=log_version),
               TensorBoardLogger(run_dir, name="logs", version=log_version)]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, default_root_dir=run_dir, **overrides)


def best_checkpoint(trainer: pl.Trainer) -> str | None:
    """Path of the best checkpoint of a fitted trainer (``None`` when none was saved)."""
    return trainer.checkpoint_callbacks[0].best_model_path or None


def _log_version(run_dir: Path, resuming: bool) -> str:
    """Log sub-folder: ``logs/`` itself, or ``logs/resume_<k>/`` so a resumed run keeps the history."""
    if not resuming:
        return ""
    return f"resume_{len(list((run_dir / 'logs').glob('resume_*'))) + 1}"


def run(cfg: DictConfig) -> dict:
    """Balance, train, checkpoint and test one configuration.

    With ``balance.smote_tomek.enabled`` the head is (after optional fine-tuning of the whole
    network) retrained on SMOTE-Tomek-resampled embeddings; its checkpoints are the run's.

    Args:
        cfg: the composed ``conf/train.yaml`` config.

    Returns:
        The test metrics (also written to ``<run_dir>/test_metrics.json``).
    """
    _check_ckpt_path(cfg.ckpt_path, Path(cfg.run_dir))
    if cfg.seed is not None:
        pl.seed_everything(cfg.seed, workers=True)
    seed = cfg.seed or 0
    run_dir = Path(cfg.run_dir)
    layout = LAYOUTS[cfg.dataset.layout]
    classes, taxonomy = list(layout.classes), layout.taxonomy()

    model_cfg = _container(cfg.model)
    net = build_net(model_cfg, classes, taxonomy)
    mean, std = list(net.backbone.mean), list(net.backbone.std)
    datamodule = instantiate(cfg.dataset, mean=mean, std=std, seed=seed, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")

    balance = _container(cfg.balance)
    plan = plan_balance(datamodule.train_set.labels, classes, balance, seed)
    datamodule.balance_train(plan)
    report = plan.report()
    write_json(run_dir / "balance.json", report)
    counts = list(datamodule.class_counts(datamodule.train_set).values())
    loss = resolve_class_weights(_container(cfg.loss), counts, plan.class_weights,
                                 sampler=plan.sample_weights is not None)
    module = LesionClassifier(
        net=net, model=model_cfg, loss=loss, optimizer=_container(cfg.optimizer),
        scheduler=_container(cfg.scheduler), classes=classes, taxonomy=taxonomy, mean=mean, std=std,
        image_size=cfg.dataset.image_size, dataset=_container(cfg.dataset),
    )

    smote = balance["smote_tomek"]
    checkpoints = run_dir / "checkpoints"
    if not smote["enabled"] or smote["finetune"]:
        stage_dir = checkpoints / "finetune" if smote["enabled"] else checkpoints
        trainer = make_trainer(cfg, run_dir, stage_dir, _log_version(run_dir, cfg.ckpt_path is not None))
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
        best = best_checkpoint(trainer)
    if smote["enabled"]:
        if smote["finetune"] and best:
            load_backbone(module.net, best)
        elif balance["backbone_ckpt"]:
            load_backbone(module.net, balance["backbone_ckpt"])
        trainer = make_trainer(cfg, run_dir, checkpoints, "head", max_epochs=smote["head_epochs"])
        report["smote_tomek"] = fit_head_on_resampled(trainer, module, datamodule, smote, seed)
        write_json(run_dir / "balance.json", report)
        best = best_checkpoint(trainer)

    if not best:
        log.warning("no checkpoint was saved (fast_dev_run?): testing the current weights")
    trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=True)
    results = module.results["test"]
    if trainer.is_global_zero:
        write_json(run_dir / "test_metrics.json", results)
        log.info("test: bacc %.4f, auc_macro %.4f → %s", results["bacc"], results["auc_macro"],
                 run_dir / "test_metrics.json")
    return results


def run_job(cfg: DictConfig) -> float:
    """:func:`run` as a Hydra job, returning the test BACC (what sweepers optimise).

    In a multirun sweep a failing job writes its error to ``<run_dir>/error.txt`` and returns NaN,
    so the sweep goes on and ``python -m lesion.summary`` lists it; a single run raises.
    """
    if not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
        return run(cfg)["bacc"]
    try:
        return run(cfg)["bacc"]
    except Exception as error:  # noqa: BLE001 — any failure is recorded, the sweep continues
        log.exception("job failed")
        message = str(error) if isinstance(error, LesionError) else f"{type(error).__name__}: {error}"
        write_atomic(Path(cfg.run_dir) / "error.txt", message.splitlines()[0] + "\n")
        return float("nan")


def _check_ckpt_path(path: str | None, run_dir: Path) -> None:
    """Fail early on a checkpoint to resume from that does not exist.

    ``last`` must find ``<run_dir>/checkpoints/last.ckpt``: Lightning alone would silently start
    from scratch in a new run directory.
    """
    if path == "last":
        if not (run_dir / "checkpoints" / "last.ckpt").is_file():
            raise LesionError("ckpt_path=last", f"no checkpoints/last.ckpt in {run_dir}",
                              "add hydra.run.dir=<the run directory to resume>")
    elif path is not None and not Path(path).is_file():
        raise LesionError("ckpt_path", f"checkpoint {path} not found",
                          "pass an existing .ckpt file, or ckpt_path=last with hydra.run.dir=<the run to resume>")
