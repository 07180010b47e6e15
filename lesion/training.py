"""``run(cfg)``: one training run from a composed config (called by ``train.py`` and tests)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
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
from lesion.gpu_slots import claimed_gpu
from lesion.interrupt import Interruption
from lesion.losses import resolve_class_weights
from lesion.models.net import LesionNet
from lesion.module import LesionClassifier, build_net
from lesion.resampled_head import fit_head_on_resampled, load_backbone

log = logging.getLogger(__name__)

MONITOR = "val/bacc"


def _container(cfg: DictConfig | None) -> dict | None:
    return None if cfg is None else OmegaConf.to_container(cfg, resolve=True)


def make_trainer(cfg: DictConfig, run_dir: Path, checkpoints: Path, log_version: str, **overrides) -> pl.Trainer:
    """The configured Trainer with our checkpoints and loggers.

    Callbacks: best checkpoint on ``val/bacc`` (listed first), latest checkpoint every epoch,
    atomic checkpoint writes and a save on SIGTERM (:class:`lesion.interrupt.Interruption`),
    early stopping when ``cfg.patience`` is set. Logs go to ``run_dir/logs/<log_version>``.
    """
    callbacks: list[pl.Callback] = [
        ModelCheckpoint(dirpath=checkpoints, filename="best", monitor=MONITOR, mode="max",
                        save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False),
        # last.ckpt every epoch (save_last=True writes it only with another checkpoint or at the end).
        ModelCheckpoint(dirpath=checkpoints, filename="last", monitor=None, save_top_k=1,
                        enable_version_counter=False),
        Interruption(checkpoints),
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


def build_classifier(cfg: DictConfig, net: LesionNet | None = None, loss: dict | None = None) -> LesionClassifier:
    """The (untrained) :class:`LesionClassifier` that a composed ``conf/train.yaml`` config describes.

    Args:
        cfg: the config.
        net: the net built from ``cfg.model`` (built here when ``None``).
        loss: the loss config with its class weights resolved (``cfg.loss`` when ``None``).
    """
    layout = LAYOUTS[cfg.dataset.layout]
    classes, taxonomy = list(layout.classes), layout.taxonomy()
    model_cfg = _container(cfg.model)
    net = net if net is not None else build_net(model_cfg, classes, taxonomy)
    return LesionClassifier(
        net=net, model=model_cfg, loss=loss if loss is not None else _container(cfg.loss),
        optimizer=_container(cfg.optimizer), scheduler=_container(cfg.scheduler), classes=classes,
        taxonomy=taxonomy, mean=list(net.backbone.mean), std=list(net.backbone.std),
        image_size=cfg.dataset.image_size, dataset=_container(cfg.dataset),
    )


def compose_classifier(config_dir: Path, overrides: list[str]) -> LesionClassifier:
    """The classifier ``python train.py <overrides>`` would train, before training (benchmarks, tests)."""
    with initialize_config_dir(str(Path(config_dir).resolve()), version_base=None):
        return build_classifier(compose("train", overrides=overrides))


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
    module = build_classifier(cfg, net, loss)

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
    so the sweep goes on and ``python -m lesion.summary`` lists it; a single run raises. A sweep
    job uses one device: more is refused before anything runs (DDP inside a Hydra sweep
    duplicates run directories or hangs), and on a multi-GPU machine each job claims a GPU
    of its own (:func:`lesion.gpu_slots.claimed_gpu`).
    """
    if not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
        return run(cfg)["bacc"]
    devices = devices_per_job(cfg.trainer)
    if devices > 1:
        raise LesionError("trainer.devices", f"a sweep (-m) runs one device per job, this one asks for {devices} "
                          f"(strategy {cfg.trainer.get('strategy', 'auto')})",
                          "sweep with trainer=gpu (one GPU per job; hydra/launcher=joblib runs one job per GPU "
                          "at once), or train one configuration at a time with trainer=ddp")
    if torch.cuda.device_count() > 1 and cfg.trainer.accelerator in ("gpu", "cuda", "auto"):
        with claimed_gpu(Path(HydraConfig.get().sweep.dir) / ".gpu-locks", torch.cuda.device_count()) as index:
            cfg.trainer.devices = [index]
            return _recorded_run(cfg)
    return _recorded_run(cfg)


def _recorded_run(cfg: DictConfig) -> float:
    """:func:`run`'s test BACC; on failure the error goes to ``<run_dir>/error.txt`` and NaN is returned."""
    try:
        return run(cfg)["bacc"]
    except Exception as error:  # noqa: BLE001 — any failure is recorded, the sweep continues
        log.exception("job failed")
        message = str(error) if isinstance(error, LesionError) else f"{type(error).__name__}: {error}"
        write_atomic(Path(cfg.run_dir) / "error.txt", message.splitlines()[0] + "\n")
        return float("nan")


def devices_per_job(trainer: DictConfig) -> int:
    """Number of devices one run of ``trainer`` uses (``-1``/``auto`` count the visible GPUs)."""
    devices = trainer.get("devices", 1)
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return len(devices)
    if str(devices) in ("-1", "auto"):
        gpu = trainer.get("accelerator") in ("gpu", "cuda", "auto")
        return max(1, torch.cuda.device_count()) if gpu else 1
    text = str(devices)
    return len([d for d in text.split(",") if d.strip()]) if "," in text else int(text)  # "0,1": GPU indices


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
