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
from hydra.errors import InstantiationException
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from lesion.callbacks import RunCheckpoint
from lesion.data.balance import plan_balance
from lesion.data.datamodule import IsicDataModule
from lesion.data.layouts import LAYOUTS
from lesion.errors import LesionError
from lesion.files import write_atomic, write_json
from lesion.gpu_slots import claimed_gpu
from lesion.hydra_record import write_record
from lesion.interrupt import Interruption
from lesion.losses import resolve_class_weights
from lesion.models.net import LesionNet
from lesion.module import LesionClassifier, build_net, read_checkpoint
from lesion.options import check_train
from lesion.resampled_head import fit_head_on_resampled, load_backbone

log = logging.getLogger(__name__)

MONITOR = "val/bacc"


def _container(cfg: DictConfig | None) -> dict | None:
    return None if cfg is None else OmegaConf.to_container(cfg, resolve=True)


def make_trainer(cfg: DictConfig, run_dir: Path, checkpoints: Path, log_version: str, **overrides) -> pl.Trainer:
    """The configured Trainer with our checkpoints and loggers.

    Callbacks: best checkpoint on ``val/bacc`` (listed first), latest checkpoint every epoch,
    atomic checkpoint writes and a save on SIGTERM (:class:`lesion.interrupt.Interruption`),
    early stopping when ``cfg.patience`` is set, the learning rate logged every epoch. Logs go
    to ``run_dir/logs/<log_version>``.
    """
    callbacks: list[pl.Callback] = [
        RunCheckpoint(dirpath=checkpoints, filename="best", monitor=MONITOR, mode="max",
                      save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False),
        # last.ckpt every epoch (save_last=True writes it only with another checkpoint or at the end).
        RunCheckpoint(dirpath=checkpoints, filename="last", monitor=None, save_top_k=1,
                      enable_version_counter=False),
        Interruption(checkpoints),
    ]
    if cfg.patience is not None:
        callbacks.append(EarlyStopping(monitor=MONITOR, mode="max", patience=cfg.patience))
    callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    loggers = [CSVLogger(run_dir, name="logs", version=log_version),
               TensorBoardLogger(run_dir, name="logs", version=log_version)]
    try:
        return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, default_root_dir=run_dir, **overrides)
    except InstantiationException as error:
        cause = error.__cause__ or error
        if isinstance(cause, LesionError):
            raise cause from None
        raise LesionError("trainer", f"Lightning refuses these options ({(str(cause).splitlines() or [''])[0][:300]})",
                          "fix the trainer.* override (see conf/trainer/default.yaml)") from None


def best_checkpoint(trainer: pl.Trainer) -> str | None:
    """Path of the best checkpoint of a fitted trainer (``None`` when none was saved)."""
    return trainer.checkpoint_callbacks[0].best_model_path or None


def _log_version(run_dir: Path, resuming: bool) -> str:
    """Log sub-folder: ``logs/`` itself, or ``logs/resume_<k>/`` so a resumed run keeps the history."""
    if not resuming:
        return ""
    return f"resume_{len(list((run_dir / 'logs').glob('resume_*'))) + 1}"


def build_datamodule(cfg: DictConfig, mean: list[float], std: list[float]) -> IsicDataModule:
    """The DataModule of ``cfg.dataset``, seeded (splits and augmentation) by ``cfg.seed`` (0 when null)."""
    return IsicDataModule(**_container(cfg.dataset), mean=mean, std=std, seed=_split_seed(cfg))


def _split_seed(cfg: DictConfig) -> int:
    return 0 if cfg.seed is None else int(cfg.seed)


def build_classifier(cfg: DictConfig, net: LesionNet | None = None, loss: dict | None = None,
                     split: dict | None = None) -> LesionClassifier:
    """The (untrained) :class:`LesionClassifier` that a composed ``conf/train.yaml`` config describes.

    Args:
        cfg: the config.
        net: the net built from ``cfg.model`` (built here when ``None``).
        loss: the loss config with its class weights resolved (``cfg.loss`` when ``None``).
        split: the DataModule's :attr:`~lesion.data.datamodule.IsicDataModule.split` record.
    """
    layout = LAYOUTS[cfg.dataset.layout]
    classes, taxonomy = list(layout.classes), layout.taxonomy()
    model_cfg = _container(cfg.model)
    net = net if net is not None else build_net(model_cfg, classes, taxonomy)
    return LesionClassifier(
        net=net, model=model_cfg, loss=loss if loss is not None else _container(cfg.loss),
        optimizer=_container(cfg.optimizer), scheduler=_container(cfg.scheduler), classes=classes,
        taxonomy=taxonomy, mean=list(net.backbone.mean), std=list(net.backbone.std),
        image_size=cfg.dataset.image_size, dataset={**_container(cfg.dataset), "seed": _split_seed(cfg)},
        split=split,
    )


def compose_classifier(config_dir: Path, overrides: list[str]) -> LesionClassifier:
    """The classifier ``python train.py <overrides>`` would train, before training (benchmarks, tests)."""
    with initialize_config_dir(str(Path(config_dir).resolve()), version_base=None):
        return build_classifier(compose("train", overrides=overrides))


def run(cfg: DictConfig) -> dict:
    """Balance, train, checkpoint and test one configuration.

    Every option is checked first (:func:`lesion.options.check_train`), and a checkpoint to
    resume from must match the configured model, before anything is written. With
    ``balance.smote_tomek.enabled`` the head is (after optional fine-tuning of the whole
    network) retrained on SMOTE-Tomek-resampled embeddings; its checkpoints are the run's.

    Args:
        cfg: the composed ``conf/train.yaml`` config.

    Returns:
        ``{"val": <validation metrics of the tested checkpoint>, "test": <test metrics>}``; the
        test metrics are also written to ``<run_dir>/test_metrics.json``, the best validation
        BACC to ``val_metrics.json``.
    """
    check_train(_container(cfg))
    run_dir = Path(cfg.run_dir)
    balance = _container(cfg.balance)
    smote = balance["smote_tomek"]
    checkpoints = run_dir / "checkpoints"
    fit_dir = checkpoints / "finetune" if smote["enabled"] else checkpoints
    resume = _resume_checkpoint(cfg, fit_dir)
    if balance["backbone_ckpt"]:
        _check_backbone_source(balance["backbone_ckpt"], cfg.model.backbone)
    # Built first, so options that Lightning refuses stop the run before anything is written.
    fit_trainer = (make_trainer(cfg, run_dir, fit_dir, _log_version(run_dir, resume is not None))
                   if not smote["enabled"] or smote["finetune"] else None)
    head_trainer = (make_trainer(cfg, run_dir, checkpoints, "head", max_epochs=smote["head_epochs"])
                    if smote["enabled"] else None)
    write_record(cfg, run_dir)
    if cfg.seed is not None:
        pl.seed_everything(cfg.seed, workers=True)
    seed = _split_seed(cfg)
    layout = LAYOUTS[cfg.dataset.layout]
    classes, taxonomy = list(layout.classes), layout.taxonomy()

    model_cfg = _container(cfg.model)
    net = build_net(model_cfg, classes, taxonomy)
    datamodule = build_datamodule(cfg, list(net.backbone.mean), list(net.backbone.std))
    datamodule.prepare_data()
    datamodule.setup("fit")

    plan = plan_balance(datamodule.train_set.labels, classes, balance, seed)
    datamodule.balance_train(plan)
    report = plan.report()
    write_json(run_dir / "balance.json", report)
    counts = list(datamodule.class_counts(datamodule.train_set).values())
    loss = resolve_class_weights(_container(cfg.loss), counts, plan.class_weights,
                                 sampler=plan.sample_weights is not None)
    module = build_classifier(cfg, net, loss, datamodule.split)

    if fit_trainer is not None:
        trainer = fit_trainer
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
        best = best_checkpoint(trainer)
    if head_trainer is not None:
        if smote["finetune"] and best:
            load_backbone(module.net, best)
        elif balance["backbone_ckpt"]:
            load_backbone(module.net, balance["backbone_ckpt"])
        trainer = head_trainer
        report["smote_tomek"] = fit_head_on_resampled(trainer, module, datamodule, smote, seed)
        write_json(run_dir / "balance.json", report)
        best = best_checkpoint(trainer)

    validation = _best_validation(trainer, module, best)
    if not best:
        log.warning("no checkpoint was saved (fast_dev_run?): testing the current weights")
    trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=True)
    results = module.results["test"]
    if trainer.is_global_zero:
        write_json(run_dir / "val_metrics.json", validation)
        write_json(run_dir / "test_metrics.json", results)
        log.info("validation: bacc %.4f (epoch %s); test: bacc %.4f, auc_macro %.4f → %s", validation["bacc"],
                 validation["epoch"], results["bacc"], results["auc_macro"], run_dir / "test_metrics.json")
    return {"val": validation, "test": results}


def _best_validation(trainer: pl.Trainer, module: LesionClassifier, best: str | None) -> dict:
    """The validation BACC the tested checkpoint was selected on, and its epoch."""
    score = trainer.checkpoint_callbacks[0].best_model_score
    if best and score is not None:
        epoch = torch.load(best, map_location="cpu", weights_only=True, mmap=True)["epoch"]
        return {"bacc": float(score), "epoch": int(epoch), "checkpoint": Path(best).name}
    return {"bacc": float(module.results.get("val", {}).get("bacc", float("nan"))), "epoch": None, "checkpoint": None}


def _resume_checkpoint(cfg: DictConfig, fit_dir: Path) -> str | None:
    """The checkpoint ``ckpt_path`` resumes, checked against the configured model and dataset.

    ``last`` means ``<fit_dir>/last.ckpt``: the fit stage's own folder (``checkpoints/finetune/``
    with SMOTE-Tomek fine-tuning). Lightning alone would silently start from scratch.
    """
    path = cfg.ckpt_path
    if path is None:
        return None
    if path == "last":
        path = fit_dir / "last.ckpt"
        if not path.is_file():
            raise LesionError("ckpt_path=last", f"no {path.relative_to(cfg.run_dir)} in {cfg.run_dir}",
                              "add hydra.run.dir=<the run directory to resume>")
    elif not Path(path).is_file():
        raise LesionError("ckpt_path", f"checkpoint {path} not found",
                          "pass an existing .ckpt file, or ckpt_path=last with hydra.run.dir=<the run to resume>")
    _, stored = read_checkpoint(path)
    runtime = ("weights", "channels_last", "compile")  # how the net starts or runs, not what it is
    model = {k: v for k, v in _container(cfg.model).items() if k not in runtime}
    differ = [f"model.{k}={stored['model'].get(k)} (this run: {v})" for k, v in model.items() if stored["model"].get(k) != v]
    classes = list(LAYOUTS[cfg.dataset.layout].classes)
    if stored["classes"] != classes:
        differ.append(f"classes {stored['classes']} (this run: {classes})")
    if differ:
        raise LesionError("ckpt_path", f"{path} was trained with {'; '.join(differ)}",
                          "resume with the overrides of the run that wrote it")
    return str(path)


def _check_backbone_source(path: str, backbone: str) -> None:
    """Refuse, before any work, a ``balance.backbone_ckpt`` that is not a lesion checkpoint of ``backbone``."""
    _, stored = read_checkpoint(path)
    if stored["model"]["backbone"] != backbone:
        raise LesionError("balance.backbone_ckpt", f"{path} has a {stored['model']['backbone']} backbone, this model "
                          f"a {backbone}", "pass the best.ckpt of a run with the same model.backbone")


def run_job(cfg: DictConfig) -> float:
    """:func:`run` as a Hydra job, returning the best validation BACC (what sweepers optimise).

    Sweepers never see test metrics: they stay in ``test_metrics.json``.

    In a multirun sweep a failing job writes its error to ``<run_dir>/error.txt`` and returns NaN,
    so the sweep goes on and ``python -m lesion.summary`` lists it; a single run raises. A sweep
    job uses one device: more is refused before anything runs (DDP inside a Hydra sweep
    duplicates run directories or hangs), and on a multi-GPU machine each job claims a GPU
    of its own (:func:`lesion.gpu_slots.claimed_gpu`).
    """
    if not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
        return run(cfg)["val"]["bacc"]
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
    """:func:`run`'s validation BACC; on failure the error goes to ``<run_dir>/error.txt`` and NaN is returned."""
    try:
        return run(cfg)["val"]["bacc"]
    except Exception as error:  # noqa: BLE001 — any failure is recorded, the sweep continues
        log.exception("job failed")
        write_record(cfg, Path(cfg.run_dir))  # lesion.summary lists the job with its error
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
