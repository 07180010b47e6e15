"""``run(cfg)``: one training run from a composed config (called by ``train.py`` and tests).

The run reads top to bottom: options checked → training stages, each with its Trainer (so
options that Lightning refuses stop the run before anything is written) → the DataModule (reads,
caches every image, splits, balances its training split) → the LightningModule → the run's
record (only now, so a run refused for its data or its model leaves nothing) → each stage fitted
in turn → the best checkpoint of the last stage tested, and its out-of-distribution threshold fitted on
the validation split and stored in it → the run's files sent to its trackers
(:mod:`lesion.train.tracking`).

Stages: ``fit`` trains the whole network (and resumes ``ckpt_path``); with
``balance.smote_tomek.enabled`` the ``head`` stage then retrains the head on SMOTE-Tomek
resampled embeddings (after ``fit`` only with ``smote_tomek.finetune``), and its checkpoints are
the run's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from lesion.balance.head_stage import fit_head_on_resampled, load_backbone
from lesion.checkpoint import holds_training_state, read_checkpoint, store_entry
from lesion.data.datamodule import IsicDataModule
from lesion.data.custom import layout_of
from lesion.data.readers import dataset_folder
from lesion.errors import LesionError
from lesion.evaluate.ood import CHECKPOINT_KEY as OOD_KEY
from lesion.evaluate.ood import OodThreshold
from lesion.evaluate.predict import predict_with_energy, prediction_items
from lesion.files import write_json
from lesion.hydra_record import write_record
from lesion.models.backbone import normalisation
from lesion.options import check_train
from lesion.train.headline import headline
from lesion.train.module import VAL_BACC_KEY, VAL_PAUC_KEY, LesionClassifier
from lesion.train.tracking import finish_run
from lesion.train.trainer import best_callback, best_checkpoint, build_run_loggers, build_trainer

log = logging.getLogger(__name__)

# Model options that say how the net starts, not what it is: a resumed checkpoint may differ in them.
_STARTING_POINT = ("weights",)


def _container(cfg: DictConfig | None) -> dict | None:
    return None if cfg is None else OmegaConf.to_container(cfg, resolve=True)


def _split_seed(cfg: DictConfig) -> int:
    return 0 if cfg.seed is None else int(cfg.seed)


def build_datamodule(cfg: DictConfig) -> IsicDataModule:
    """The DataModule of ``cfg.dataset``, balancing as ``cfg.balance`` says, seeded by ``cfg.seed`` (0 when null),
    with patient metadata when ``cfg.model.metadata``."""
    mean, std = normalisation(cfg.model.backbone)
    return IsicDataModule(**_container(cfg.dataset), mean=mean, std=std, seed=_split_seed(cfg),
                          balance=_container(cfg.balance), metadata=bool(cfg.model.get("metadata")))


def build_classifier(cfg: DictConfig, split: dict | None = None, metadata: dict | None = None) -> LesionClassifier:
    """The (untrained) :class:`LesionClassifier` that a composed ``conf/train.yaml`` config describes.

    Args:
        cfg: the config.
        split: the DataModule's :attr:`~lesion.data.datamodule.IsicDataModule.split` record.
        metadata: the DataModule's metadata encoding (``as_dict``) when ``model.metadata``.
    """
    layout = layout_of(_container(cfg.dataset))
    return LesionClassifier(
        model=_container(cfg.model), loss=_container(cfg.loss), optimizer=_container(cfg.optimizer),
        scheduler=_container(cfg.scheduler), classes=list(layout.classes), taxonomy=layout.taxonomy(),
        image_size=cfg.dataset.image_size, dataset={**_container(cfg.dataset), "seed": _split_seed(cfg)},
        split=split, metadata=metadata, channels_last=cfg.channels_last, compile=cfg.compile,
    )


def compose_classifier(config_dir: Path, overrides: list[str]) -> LesionClassifier:
    """The classifier ``python train.py <overrides>`` would train, before training (benchmarks, tests)."""
    with initialize_config_dir(str(Path(config_dir).resolve()), version_base=None):
        return build_classifier(compose("train", overrides=overrides))


@dataclass
class Stage:
    """One fit of the run: its Trainer, ``fit(trainer, module, datamodule, previous_best) → best``, and
    the checkpoint it resumes, if any."""

    name: str
    trainer: pl.Trainer
    fit: Callable[[pl.Trainer, LesionClassifier, IsicDataModule, str | None], str | None]
    resume: str | None = None


def _fit_network(trainer: pl.Trainer, module: LesionClassifier, datamodule: IsicDataModule, previous: str | None,
                 resume: str | None) -> str | None:
    """Stage ``fit``: train the whole network (from ``resume`` when given)."""
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    return best_checkpoint(trainer)


def _fit_head(trainer: pl.Trainer, module: LesionClassifier, datamodule: IsicDataModule, previous: str | None,
              smote: dict, backbone_ckpt: str | None, run_dir: Path) -> str | None:
    """Stage ``head``: embed with the previous stage's best backbone (else ``balance.backbone_ckpt``,
    else the model's own), SMOTE-Tomek the embeddings, train the head on them; ``balance.json``
    gains the resampling report."""
    source = previous or backbone_ckpt
    if source:
        load_backbone(module.net, source)
    report = fit_head_on_resampled(trainer, module, datamodule, smote, datamodule.seed)
    write_json(run_dir / "balance.json", {**datamodule.balance_report(), "smote_tomek": report})
    return best_checkpoint(trainer)


def training_stages(cfg: DictConfig, run_dir: Path) -> list[Stage]:
    """The stages ``cfg`` asks for, each with its Trainer; checks the checkpoints they start from."""
    balance = _container(cfg.balance)
    smote = balance["smote_tomek"]
    checkpoints = run_dir / "checkpoints"
    trackers = build_run_loggers(cfg)  # one tracker run (MLflow, W&B) for all the stages
    stages = []
    if not smote["enabled"] or smote["finetune"]:
        folder = checkpoints / "finetune" if smote["enabled"] else checkpoints
        resume = _resume_checkpoint(cfg, folder)
        trainer = build_trainer(cfg, folder, _log_version(run_dir, resume is not None), trackers,
                                stage="fit" if smote["enabled"] else None)
        stages.append(Stage("fit", trainer, partial(_fit_network, resume=resume), resume))
    if smote["enabled"]:
        if balance["backbone_ckpt"]:
            _check_backbone_source(balance["backbone_ckpt"], cfg.model.backbone)
        trainer = build_trainer(cfg, checkpoints, "head", trackers, stage="head", max_epochs=smote["head_epochs"])
        stages.append(Stage("head", trainer, partial(_fit_head, smote=smote, backbone_ckpt=balance["backbone_ckpt"],
                                                     run_dir=run_dir)))
    return stages


def run(cfg: DictConfig) -> dict:
    """Balance, train, checkpoint and test one configuration.

    Every option is checked first (:func:`lesion.options.check_train`), a checkpoint to resume
    from must match the configured model, and the data is read and checked and the model built,
    before anything is written to the run directory.

    Args:
        cfg: the composed ``conf/train.yaml`` config.

    Returns:
        ``{"val": <validation metrics of the tested checkpoint>, "test": <test metrics>}``; the
        test metrics are also written to ``<run_dir>/test_metrics.json``, the best validation
        BACC to ``val_metrics.json``.
    """
    check_train(_container(cfg))
    if not cfg.dataset.synthetic:  # here rather than when the data is read: before the trainers print anything
        dataset_folder(layout_of(_container(cfg.dataset)), cfg.dataset.root)
    run_dir = Path(cfg.run_dir)
    stages = training_stages(cfg, run_dir)  # refuses a resume that does not fit, before anything is logged
    log.info(headline(cfg))
    if cfg.seed is not None:
        pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    for split in (datamodule.train_set, datamodule.val_set, datamodule.test_set):
        split.images.build()  # every image decoded, so checked, before the run is recorded
    for stage in stages:
        if stage.resume:
            _check_resumed_split(stage.resume, datamodule.split)
    encoding = datamodule.metadata_encoding
    module = build_classifier(cfg, datamodule.split, None if encoding is None else encoding.as_dict())
    write_record(cfg, run_dir)
    write_json(run_dir / "balance.json", datamodule.balance_report())

    best = None
    for stage in stages:
        log.info("stage %s on %s", stage.name, _devices(stage.trainer))
        best = stage.fit(stage.trainer, module, datamodule, best)

    trainer = stages[-1].trainer
    validation = _validation_of(trainer, module, best)
    if not best:
        log.warning("no checkpoint was saved (fast_dev_run?): testing the current weights")
    # verbose=False: not Lightning's table of every test/* figure (test_metrics.json holds them); one line below.
    trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=True, verbose=False)
    results = module.results["test"]
    if trainer.is_global_zero:
        write_json(run_dir / "val_metrics.json", validation)
        write_json(run_dir / "test_metrics.json", results)
        if best:
            # Testing's teardown left the module on the CPU: the validation pass runs where training ran.
            _store_ood_threshold(best, module.to(trainer.strategy.root_device), datamodule)
        finish_run(trainer.loggers, run_dir, best, _container(cfg), validation["bacc"])
        pauc = f", pauc80 {results['pauc80']:.4f}" if "pauc80" in results else ""
        log.info("validation: bacc %.4f (epoch %s); test: bacc %.4f, auc_macro %.4f%s → %s", validation["bacc"],
                 validation["epoch"], results["bacc"], results["auc_macro"], pauc, run_dir / "test_metrics.json")
    return {"val": validation, "test": results}


def _store_ood_threshold(best: str, module: LesionClassifier, datamodule: IsicDataModule) -> None:
    """Fit the out-of-distribution threshold (:mod:`lesion.evaluate.ood`) on the validation split, predicted as
    ``evaluate.py`` predicts, with the weights of ``best`` (which testing loaded into ``module``), and store it there."""
    _, energies, _ = predict_with_energy(module, datamodule.loader(prediction_items(datamodule.val_set, module, 1)))
    threshold = OodThreshold.fitted(energies)
    store_entry(best, OOD_KEY, threshold.as_dict())
    log.info("out-of-distribution threshold: %s above %.4f is unknown (%.0f %% of %d validation images at or below) "
             "→ %s", threshold.score, threshold.threshold, 100 * threshold.recall, threshold.images, Path(best).name)


def _devices(trainer: pl.Trainer) -> str:
    """What a stage runs on, e.g. ``1 × cpu`` or ``4 × cuda (ddp), 2 nodes``."""
    strategy = type(trainer.strategy).__name__.removesuffix("Strategy").lower()
    text = f"{trainer.num_devices} × {trainer.strategy.root_device.type}"
    text += f" ({strategy})" if trainer.num_devices * trainer.num_nodes > 1 else ""
    return text + (f", {trainer.num_nodes} nodes" if trainer.num_nodes > 1 else "")


def _validation_of(trainer: pl.Trainer, module: LesionClassifier, best: str | None) -> dict:
    """The validation BACC of the checkpoint to be tested (for two classes its pAUC80 too), and its epoch,
    whichever metric chose it.

    Read from the checkpoint (:data:`~lesion.train.module.VAL_BACC_KEY`, ``VAL_PAUC_KEY``); a checkpoint
    written before they were stored gives its callback's best score, when that score is ``val/bacc``.
    """
    if not best:
        found = module.results.get("val", {})
        return {"bacc": float(found.get("bacc", float("nan"))), **({"pauc80": float(found["pauc80"])}
                                                                   if "pauc80" in found else {}),
                "epoch": None, "checkpoint": None}
    contents = torch.load(best, map_location="cpu", weights_only=True, mmap=True)
    bacc = contents.get(VAL_BACC_KEY)
    callback = best_callback(trainer)
    if bacc is None and callback is not None and callback.monitor == "val/bacc" and callback.best_model_score is not None:
        bacc = float(callback.best_model_score)
    pauc = contents.get(VAL_PAUC_KEY)
    return {"bacc": float("nan") if bacc is None else float(bacc),
            **({"pauc80": float(pauc)} if pauc is not None else {}),
            "epoch": int(contents["epoch"]), "checkpoint": Path(best).name}


def _log_version(run_dir: Path, resuming: bool) -> str:
    """Log sub-folder: ``logs/`` itself, or ``logs/resume_<k>/`` so a resumed run keeps the history."""
    if not resuming:
        return ""
    return f"resume_{len(list((run_dir / 'logs').glob('resume_*'))) + 1}"


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
    contents, stored = read_checkpoint(path)
    if not holds_training_state(contents):
        raise LesionError("ckpt_path", f"{path} holds the model's weights only (as a run's best.ckpt does), not the "
                          "optimizer and callback state that resuming needs",
                          "resume from the run's last.ckpt: ckpt_path=last hydra.run.dir=<the run directory>")
    model = {k: v for k, v in _container(cfg.model).items() if k not in _STARTING_POINT}
    differ = [f"model.{k}={stored['model'].get(k)} (this run: {v})" for k, v in model.items() if stored["model"].get(k) != v]
    classes = list(layout_of(_container(cfg.dataset)).classes)
    if stored["classes"] != classes:
        differ.append(f"classes {stored['classes']} (this run: {classes})")
    if differ:
        raise LesionError("ckpt_path", f"{path} was trained with {'; '.join(differ)}",
                          "resume with the overrides of the run that wrote it")
    return str(path)


def _check_resumed_split(path: str, split: dict) -> None:
    """Refuse to resume a checkpoint that validated or tested on other images than the splits made now:
    images it validated on would be trained on, or the reverse."""
    _, stored = read_checkpoint(path)
    trained = stored.get("split") or {}
    differ = [name for name, key in (("validation", "val_ids_sha256"), ("test", "test_ids_sha256"))
              if trained.get(key) != split.get(key)]
    if differ:
        raise LesionError("ckpt_path", f"{path} was trained with another {' and '.join(differ)} split than the one "
                          "made here (other data, seed or dataset.fold, or splits made by an older lesion)",
                          "resume with the data and overrides of the run that wrote it, or start a new run")


def _check_backbone_source(path: str, backbone: str) -> None:
    """Refuse, before any work, a ``balance.backbone_ckpt`` that is not a lesion checkpoint of ``backbone``."""
    _, stored = read_checkpoint(path)
    if stored["model"]["backbone"] != backbone:
        raise LesionError("balance.backbone_ckpt", f"{path} has a {stored['model']['backbone']} backbone, this model "
                          f"a {backbone}", "pass the best.ckpt of a run with the same model.backbone")
