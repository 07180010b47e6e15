"""``run(cfg)``: evaluate a checkpoint, or an ensemble of them, on a labelled split or a folder of images.

Called by ``evaluate.py`` and tests. Each checkpoint alone defines its model, classes and
preprocessing; the dataset defaults to the one the model was trained on.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from lesion.data.datamodule import IsicDataModule, default_workers
from lesion.data.layouts import LAYOUTS
from lesion.data.metadata import read_metadata, read_metadata_csv
from lesion.data.metadata_features import MetadataEncoding
from lesion.data.readers import patient_ids
from lesion.data.unlabelled import FolderImages
from lesion.device import resolve_device
from lesion.errors import LesionError
from lesion.evaluate import plots
from lesion.evaluate.calibration import apply_temperature, fit_temperature
from lesion.evaluate.ensemble import combine, image_rows, member_checkpoints
from lesion.evaluate.folder import folder_images, model_inputs
from lesion.evaluate.gradcam import (
    Explanation,
    GradCamExplainer,
    contact_sheet,
    report_flat,
    sheet_title,
    write_gradcam,
)
from lesion.evaluate.ood import detection_report
from lesion.evaluate.ood_flags import (
    OodFlags,
    check_unknown_class,
    ensemble_scores,
    flagging_threshold,
    stored_threshold_applies,
)
from lesion.evaluate.predict import predict_with_energy, prediction_items
from lesion.evaluate.rebuilt import (
    check_test_split,
    check_validation_split,
    checkpoint_datamodule,
)
from lesion.evaluate.report import evaluation_report, format_report
from lesion.evaluate.subgroups import (
    HEADLINE,
    format_subgroups,
    predicted_shares,
    subgroup_report,
    subgroup_table,
    subgroups_of,
)
from lesion.export.graph import ProbabilityGraph
from lesion.export.onnx import OnnxRuntimeGraph, onnx_bytes, require_onnx
from lesion.export.preprocessing import preprocessing_record
from lesion.files import write_atomic, write_json
from lesion.hydra_record import write_record
from lesion.options import check_evaluate, tta_views
from lesion.train.module import LesionClassifier

log = logging.getLogger(__name__)


def _predictions_table(ids: list[str], probs: np.ndarray, classes: list[str], id_column: str,
                       labels: np.ndarray | None, ood: OodFlags) -> pd.DataFrame:
    """ISIC submission format (id + one probability per class) plus true and predicted class, the
    out-of-distribution score and the ``unknown`` flag (empty without a threshold)."""
    table = pd.DataFrame(probs, columns=classes)
    table.insert(0, id_column, ids)
    if labels is not None:
        table["label"] = [classes[i] for i in labels]
    table["prediction"] = [classes[i] for i in probs.argmax(1)]
    table["ood_score"] = ood.scores
    table["unknown"] = pd.array(ood.flags if ood.threshold is not None else [pd.NA] * len(ids), dtype="boolean")
    return table


def _explain(module: LesionClassifier, cfg: DictConfig, dataset: Dataset, original: Callable[[int], Image.Image],
             probs: np.ndarray, folder: Path, sheet: Path) -> list[Explanation]:
    """Grad-CAM files for the first ``gradcam.n`` images of ``dataset`` (all when -1) and a contact sheet.

    Each CAM explains the very tensor the model classifies (``dataset[i][0]``, with its metadata
    ``dataset[i][1]`` for a metadata net) and is mapped onto ``original(i)``, the full-resolution
    image, at whose size the files are written.

    Args:
        dataset: items ``(input, [metadata,] label)`` and ``ids``, each input one plain view.
        original: the original image of item ``i``.
        probs: the reported probabilities, for the titles of the contact sheet.
        folder, sheet: where the files and the contact sheet go.

    Returns:
        The explanations, in dataset order.
    """
    n = len(dataset) if cfg.gradcam.n < 0 else min(cfg.gradcam.n, len(dataset))
    if n == 0:
        return []
    classes = list(module.hparams.classes)
    # gradcam.target and gradcam.layer were checked before any work (run, lesion.options).
    target = None if cfg.gradcam.target is None else classes.index(cfg.gradcam.target)
    overlays, titles, found = [], [], []
    layer = getattr(module.net.backbone, cfg.gradcam.layer)
    ids = dataset.ids
    with GradCamExplainer(module.net, target_layer=layer) as explainer, tqdm(total=n, desc="grad-cam", unit="image") as bar:
        for start in range(0, n, cfg.batch_size):  # one forward/backward pass per batch
            chunk = range(start, min(n, start + cfg.batch_size))
            images, items = [original(i) for i in chunk], [dataset[i] for i in chunk]
            metadata = torch.stack([item[1] for item in items]) if module.uses_metadata else None
            explained = explainer.explain_batch(torch.stack([item[0] for item in items]), [im.size for im in images],
                                                [target] * len(items), metadata)
            for i, image, each in zip(chunk, images, explained):
                p = probs[i]
                overlays.append(write_gradcam(ids[i], image, each.cam, folder)["overlay"])
                titles.append(sheet_title(ids[i], classes, p, each.target, items[i - start][-1]))
                found.append(each)
            bar.update(len(items))
    contact_sheet(overlays, sheet, titles, footnote=report_flat(found))
    return found


def _run_dir_log(ckpt: Path) -> Path | None:
    """The CSV training log of the run a checkpoint comes from, if it is still next to it."""
    run_dir = ckpt.resolve().parent.parent
    for candidate in (run_dir / "logs" / "head" / "metrics.csv", run_dir / "logs" / "metrics.csv"):
        if candidate.is_file():
            return candidate
    return None


def _folder(member: Member, cfg: DictConfig) -> FolderImages:
    """The images of ``cfg.images`` as the member's model takes them (:func:`~lesion.evaluate.folder.model_inputs`)."""
    return model_inputs(member.module, member.path, cfg.images, cfg.metadata)


def _ood_folders(members: list[Member], cfg: DictConfig) -> list[FolderImages] | None:
    """The images of ``ood_images``, per member preprocessed as its checkpoint says (``None`` without the option);
    a missing or empty folder, or a model that takes patient metadata, is refused."""
    if cfg.ood_images is None:
        return None
    for member in members:
        if member.module.uses_metadata:
            raise LesionError("ood_images", f"{member.path} was trained with patient metadata, which these images do not "
                              "have", "compare with a model trained on images alone")
    try:
        return [folder_images(member.module.hparams, cfg.ood_images) for member in members]
    except LesionError as error:
        raise LesionError("ood_images", f"{error.where}: {error.problem}",
                          "pass ood_images=<a folder of images unlike the training data>") from None


def _folder_predictions(member: Member, images: FolderImages, cfg: DictConfig,
                        views: tuple[bool, int]) -> tuple[np.ndarray, np.ndarray]:
    """The member's probabilities and energies of a folder's images, with the test-time ``views``."""
    flips, crops = views
    loader = DataLoader(prediction_items(images, member.module, crops), batch_size=cfg.batch_size,
                        num_workers=default_workers(cfg.num_workers), pin_memory=member.module.device.type == "cuda")
    probs, energies, _ = member.predict(loader, flips, crops)
    return probs, energies


def _id_column(hp) -> str:
    stored = hp.dataset or {}
    return LAYOUTS[stored["layout"]].id_column if stored.get("layout") in LAYOUTS else stored.get("image_column", "image")


@dataclass
class Member:
    """One model of the evaluation: its checkpoint, its module, its name in outputs, and the graph that
    computes its probabilities when not the module's own net (``runtime=onnx``)."""

    path: Path
    module: LesionClassifier
    name: str
    graph: OnnxRuntimeGraph | None = None
    precision: str = "32"
    channels_last: bool = False

    def predict(self, loader: DataLoader, flips: bool, crops: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`~lesion.evaluate.predict.predict_with_energy` with this member's net or graph, precision and
        memory format."""
        return predict_with_energy(self.module, loader, flips, crops, self.graph, self.precision, self.channels_last)


def _onnx_graph(module: LesionClassifier) -> OnnxRuntimeGraph:
    """The module's net exported to ONNX in memory (as ``export.py`` writes it), run by ONNX Runtime on the CPU."""
    record = preprocessing_record(module.hparams)
    net = copy.deepcopy(module.net).cpu()  # exported from the CPU, wherever the module runs
    return OnnxRuntimeGraph(onnx_bytes(ProbabilityGraph([net]), record, record["input_size"]))


def _members(cfg: DictConfig) -> list[Member]:
    """The checkpoints ``cfg.ckpt`` names, loaded; refuses members whose classes differ."""
    paths = member_checkpoints(OmegaConf.to_container(cfg.ckpt) if not isinstance(cfg.ckpt, str) else cfg.ckpt)
    device = resolve_device("device", cfg.device)
    members = [Member(path, LesionClassifier.load_from_checkpoint(path, device, weights_only=not cfg.trust_checkpoint,
                                                                  channels_last=cfg.channels_last),
                      f"member_{k}", precision=str(cfg.precision), channels_last=cfg.channels_last)
               for k, path in enumerate(paths, 1)]
    log.info("predicting on %s%s%s", device, "" if str(cfg.precision) == "32" else f", autocast {cfg.precision}",
             ", channels-last" if cfg.channels_last else "")
    classes = list(members[0].module.hparams.classes)
    for member in members[1:]:
        if list(member.module.hparams.classes) != classes:
            raise LesionError("ckpt", f"{member.path} has classes {list(member.module.hparams.classes)}, "
                              f"{members[0].path} {classes}", "ensemble models of the same classes")
    if cfg.metadata is not None and cfg.subgroups == "none" and not any(m.module.uses_metadata for m in members):
        raise LesionError("metadata", f"{members[0].path} takes no patient metadata, and subgroups=none reports no "
                          "groups", "drop metadata=, or report by patient attributes (subgroups=auto)")
    if cfg.runtime == "onnx":
        for member in members:
            member.graph = _onnx_graph(member.module)
    return members


def _gradcam_paths(out: Path, member: Member, members: list[Member]) -> tuple[Path, Path]:
    """Grad-CAM folder and contact sheet: ``gradcam/``, or ``gradcam/<member>/`` for each member of an ensemble."""
    if len(members) == 1:
        return out / "gradcam", out / "gradcam_sheet.png"
    return out / "gradcam" / member.name, out / f"gradcam_sheet_{member.name}.png"


def _table(ids: list[str], each: list[np.ndarray], probs: np.ndarray, members: list[Member], cfg: DictConfig,
           labels: np.ndarray | None, ood: OodFlags) -> pd.DataFrame:
    """The predictions table, with each member's probabilities after it when ``member_columns``."""
    classes = list(members[0].module.hparams.classes)
    table = _predictions_table(ids, probs, classes, _id_column(members[0].module.hparams), labels, ood)
    if cfg.member_columns and len(members) > 1:
        for member, member_probs in zip(members, each):
            for c, name in enumerate(classes):
                table[f"{member.name}/{name}"] = member_probs[:, c]
    return table


def _challenge_submission(table: pd.DataFrame, member: Member) -> pd.DataFrame | None:
    """A challenge's submission as its scorer reads it, from the predictions ``table``: a two-class challenge's (ISIC
    2020, 2024) its id column and ``target``, the positive class's probability; one whose ground truth is one-hot over
    every class (ISIC 2018 Task 3, ISIC 2019, UNK included) its id column and one probability per class, in the
    ground truth's column order; ``None`` for other models."""
    layout = LAYOUTS.get((member.module.hparams.dataset or {}).get("layout"))
    if layout is None:
        return None
    if layout.label_column is not None and len(layout.classes) == 2:
        return pd.DataFrame({layout.id_column: table[layout.id_column],
                             layout.label_column: table[layout.label_values["1"]]})
    if set(layout.label_columns.values()) == set(layout.classes):
        return pd.DataFrame({layout.id_column: table[layout.id_column],
                             **{column: table[name] for column, name in layout.label_columns.items()}})
    return None


def _write_predictions(table: pd.DataFrame, member: Member, out: Path) -> None:
    """``predictions.csv`` and, for a challenge's model, ``submission.csv`` (:func:`_challenge_submission`)."""
    write_atomic(out / "predictions.csv", table.to_csv(index=False))
    submission = _challenge_submission(table, member)
    if submission is not None:
        write_atomic(out / "submission.csv", submission.to_csv(index=False))


def _matched_rows(members: list[Member], datasets: list[Dataset], where: str, other_images: str,
                  fix: str) -> list[np.ndarray]:
    """Per member, the rows of its dataset in the first member's image order (matched by image id).

    Refuses a member whose dataset holds other images than the first member's, in one line naming
    both: ``where`` and ``fix`` as in :class:`LesionError`, ``other_images`` what the member did.
    """
    first = datasets[0].ids
    rows = []
    for member, dataset in zip(members, datasets):
        matched = image_rows(first, dataset.ids)
        if matched is None:
            shared = len(set(first) & set(dataset.ids))
            raise LesionError(where, f"{member.name} ({member.path}) {other_images} than {members[0].name} "
                              f"({members[0].path}): {len(dataset)} and {len(first)} images, {shared} shared", fix)
        rows.append(matched)
    return rows


def _ensemble_record(members: list[Member], cfg: DictConfig) -> dict:
    return {"method": cfg.ensemble, "members": {m.name: str(m.path) for m in members}} if len(members) > 1 else {}


def run(cfg: DictConfig) -> dict:
    """Evaluate ``cfg.ckpt`` (one model or an ensemble) and write the reports to ``cfg.out``.

    On a labelled split (``dataset`` + ``split``): :func:`_evaluate_split`; on a folder
    (``images=DIR``): :func:`_predict_folder`. An ensemble's members each preprocess and predict
    with their own settings; their probabilities are combined (:mod:`lesion.evaluate.ensemble`)
    and every output is written for the combination.

    Returns:
        The metrics (empty for a folder).
    """
    options = OmegaConf.to_container(cfg, resolve=True)
    check_evaluate(options)
    if cfg.runtime == "onnx":
        require_onnx("runtime=onnx")
    members = _members(cfg)
    classes = list(members[0].module.hparams.classes)
    if cfg.gradcam.target is not None and cfg.gradcam.target not in classes:
        raise LesionError("gradcam.target", f"unknown class '{cfg.gradcam.target}'", f"use one of {', '.join(classes)}")
    if cfg.unknown_class is not None and cfg.unknown_class not in classes:
        raise LesionError("unknown_class", f"'{cfg.unknown_class}' is not one of the model's classes",
                          f"use one of {', '.join(classes)} (ISIC 2019: UNK), or drop unknown_class")
    views = tta_views(options["tta"])
    if cfg.images:
        return _predict_folder(members, cfg, options, views)
    return _evaluate_split(members, cfg, options, views)


def _predict_folder(members: list[Member], cfg: DictConfig, options: dict, views: tuple[bool, int]) -> dict:
    """``images=DIR``: ``predictions.csv`` (and a challenge's ``submission.csv``), Grad-CAM files, and
    with ``metadata=CSV`` the images and predicted-class shares per subgroup (``subgroups.csv`` / ``.json``).

    Args:
        options: ``cfg`` as plain, checked values.
        views: the test-time augmentation, ``(flips, crops)``.

    Returns:
        ``{}``: unlabelled images have no metrics.
    """
    out = Path(cfg.out)
    if cfg.metadata is not None and not all(m.module.uses_metadata for m in members):
        log.warning("metadata: only the members trained with patient metadata take it as input")
    folders = [_folder(member, cfg) for member in members]
    groups = _folder_groups(members[0], folders[0].ids, cfg, options)
    stored = stored_threshold_applies(members, views)
    check_unknown_class(members, cfg, stored, fitted=False)
    write_record(cfg, out)
    each, energies = zip(*[_folder_predictions(m, f, cfg, views) for m, f in zip(members, folders)])
    threshold = flagging_threshold(members, stored, None,
                               "an ensemble's, or test-time views', is fitted on the validation split predicted alike, "
                               "which images=DIR does not read")
    ood = OodFlags(ensemble_scores(energies), threshold, cfg.unknown_class)
    probs = ood.predictions(combine(each, cfg.ensemble), list(members[0].module.hparams.classes))
    table = _table(folders[0].ids, each, probs, members, cfg, None, ood)
    _write_predictions(table, members[0], out)
    if groups is not None:
        _write_subgroups(predicted_shares(probs, list(members[0].module.hparams.classes), groups,
                                          cfg.subgroup_min_images), out, figure=False)
    for member, images, member_probs in zip(members, folders, each):
        _explain(member.module, cfg, images, images.read, member_probs, *_gradcam_paths(out, member, members))
    log.info("%d images predicted → %s", len(table), out / "predictions.csv")
    return {}


def _evaluate_split(members: list[Member], cfg: DictConfig, options: dict, views: tuple[bool, int]) -> dict:
    """A labelled split: ``metrics.json`` / ``metrics.txt`` (with bootstrap CIs and calibration error),
    ``predictions.csv``, plots and Grad-CAM files.

    Args:
        options: ``cfg`` as plain, checked values.
        views: the test-time augmentation, ``(flips, crops)``.

    Returns:
        The metrics (:func:`~lesion.evaluate.report.evaluation_report`).
    """
    if cfg.metadata is not None:
        raise LesionError("metadata", "is read only with images=DIR; a split's metadata comes from its dataset",
                          "drop metadata=, or pass images=DIR")
    if cfg.calibrate and cfg.ensemble == "rank":
        raise LesionError("calibrate", "fits a temperature to probabilities, and ensemble=rank gives ranks",
                          "use ensemble=mean, or drop calibrate")
    flips, crops = views
    out = Path(cfg.out)
    prepared = [_prepared_split(member, cfg, options) for member in members]
    rows = _matched_rows(members, [dataset for _, dataset in prepared], "ckpt", f"evaluates other {cfg.split} images",
                         "ensemble models of the same dataset and split")
    stored = stored_threshold_applies(members, views)
    val_rows = _validation_rows(members, prepared, cfg, needed=cfg.calibrate or not stored)
    ood_folders = _ood_folders(members, cfg)
    check_unknown_class(members, cfg, stored, fitted=val_rows is not None)
    datamodule, dataset = prepared[0]
    groups = _split_groups(datamodule, dataset, cfg, options)
    write_record(cfg, out)
    predicted = [m.predict(dm.loader(prediction_items(d, m.module, crops)), flips, crops) for m, (dm, d) in zip(members, prepared)]
    own = [p for p, _, _ in predicted]  # each member's rows in its own image order
    each, labels = [p[r] for p, r in zip(own, rows)], predicted[0][2]
    energies = [e[r] for (_, e, _), r in zip(predicted, rows)]
    val_predicted = None if val_rows is None else [
        m.predict(dm.loader(prediction_items(dm.val_set, m.module, crops)), flips, crops)[:2]
        for m, (dm, _) in zip(members, prepared)]
    probs = combine(each, cfg.ensemble)
    if cfg.calibrate:
        val_probs = combine([p[r] for (p, _), r in zip(val_predicted, val_rows)], cfg.ensemble)
        temperature = _fitted_temperature(val_probs, datamodule.val_set.labels, cfg)
        probs = apply_temperature(np.log(np.clip(probs, 1e-12, None)), temperature)
    val_scores = None if val_rows is None else ensemble_scores([e[r] for (_, e), r in zip(val_predicted, val_rows)])
    ood = OodFlags(ensemble_scores(energies), flagging_threshold(members, stored, val_scores, "the members validated on "
                                                    "other images, or not on the split made here"), cfg.unknown_class)
    if ood_folders is not None:
        ood_energies = [_folder_predictions(m, f, cfg, views)[1] for m, f in zip(members, ood_folders)]
        ood.detection = detection_report(ood.scores, ensemble_scores(ood_energies))
    probs = ood.predictions(probs, datamodule.classes)  # every figure below is of these predictions
    report = _write_split_reports(probs, labels, each, members, prepared[0], groups, ood, cfg)
    for member, (_, member_dataset), member_probs in zip(members, prepared, own):
        _explain(member.module, cfg, member_dataset, lambda i, d=member_dataset: d.table.images.read(d.ids[i]),
                 member_probs, *_gradcam_paths(out, member, members))
    log.info("%s/%s: bacc %.4f [%.4f, %.4f], auc_macro %.4f → %s", datamodule.layout.name, cfg.split,
             report["bacc"], *report["ci/bacc"], report["auc_macro"], out)
    return report


def _write_split_reports(probs: np.ndarray, labels: np.ndarray, each: list[np.ndarray], members: list[Member],
                         prepared: tuple[IsicDataModule, Dataset], groups: pd.DataFrame | None, ood: OodFlags,
                         cfg: DictConfig) -> dict:
    """``metrics.json`` / ``metrics.txt`` (with the out-of-distribution entries of ``ood``), the subgroup report (with
    ``groups``), ``predictions.csv`` (and a challenge's ``submission.csv``) and plots.

    Args:
        probs: the (combined) probabilities of the split's images, in the order of ``prepared``'s dataset.
        labels: their classes.
        each: every member's probabilities, in the same order.
        prepared: the first member's DataModule and split.
        groups: the images' subgroups, or ``None``.

    Returns:
        The metrics (:func:`~lesion.evaluate.report.evaluation_report`).
    """
    out, (datamodule, dataset) = Path(cfg.out), prepared
    classes = list(members[0].module.hparams.classes)
    report = evaluation_report(probs, labels, classes, n_bootstrap=cfg.bootstrap, seed=cfg.seed,
                               patients=patient_ids(datamodule.layout, datamodule.root, list(dataset.ids)))
    if len(members) > 1:
        report["ensemble"] = _ensemble_record(members, cfg)
    if cfg.runtime != "torch":
        report["runtime"] = cfg.runtime
    report.update(ood.record())
    write_json(out / "metrics.json", report)
    text = format_report(report) + "\n" + ood.line() + "\n"
    if groups is not None:
        subgroups = subgroup_report(probs, labels, classes, groups, cfg.subgroup_min_images, cfg.bootstrap, cfg.seed)
        text += "\n" + format_subgroups(subgroups)
        _write_subgroups(subgroups, out, figure=cfg.plots)
    write_atomic(out / "metrics.txt", text)
    _write_predictions(_table(dataset.ids, each, probs, members, cfg, labels, ood), members[0], out)
    if cfg.plots:
        _plots(members, datamodule, probs, labels, report, cfg, out)
    return report


def _validation_rows(members: list[Member], prepared: list[tuple[IsicDataModule, Dataset]], cfg: DictConfig,
                     needed: bool) -> list[np.ndarray] | None:
    """Per member, the rows of its validation split in the first member's image order, when ``needed`` (to
    calibrate, or to fit the out-of-distribution threshold); ``None`` when not needed, or when the members did not
    all validate on these images (refused with ``calibrate``)."""
    if cfg.calibrate:
        # The temperature is fitted to the ensemble's probability of each validation image, which
        # only members that all validated on that image (none trained on it) can give.
        return _matched_rows(members, [dm.val_set for dm, _ in prepared], "calibrate", "validated on other images",
                             "calibrate each member alone, or ensemble members that share their validation split "
                             "(the same data, seed and dataset.fold)")
    if not needed or not all(_validated_on(m, dm) for m, (dm, _) in zip(members, prepared)):
        return None
    rows = [image_rows(prepared[0][0].val_set.ids, dm.val_set.ids) for dm, _ in prepared]
    return None if any(r is None for r in rows) else rows


def _validated_on(member: Member, datamodule: IsicDataModule) -> bool:
    """Whether the member validated on the validation split made here (:func:`check_validation_split`)."""
    try:
        check_validation_split(member.module.hparams.split, datamodule.split, member.path)
    except LesionError:
        return False
    return True


def _fitted_temperature(val_probs: np.ndarray, val_labels: np.ndarray, cfg: DictConfig) -> float:
    """The temperature fitted on the members' combined validation probabilities (``calibration.json``)."""
    temperature = fit_temperature(np.log(np.clip(val_probs, 1e-12, None)), val_labels)
    write_json(Path(cfg.out) / "calibration.json", {"temperature": temperature, "fitted_on": "val",
                                                   "images": len(val_labels)})
    log.info("temperature %.3f fitted on %d validation images", temperature, len(val_labels))
    return temperature



def _split_groups(datamodule: IsicDataModule, dataset: Dataset, cfg: DictConfig, options: dict) -> pd.DataFrame | None:
    """The subgroups of a split's images (:func:`~lesion.evaluate.subgroups.subgroups_of`), from its metadata."""
    if options["subgroups"] == "none":
        return None
    metadata = read_metadata(datamodule.layout, datamodule.root, dataset.table.split, dataset.ids)
    groups = subgroups_of(metadata, options["subgroups"], options["subgroup_age_bands"],
                          f"the {cfg.split} split of {datamodule.root}")
    if groups is None:
        log.info("subgroups: the %s split gives no patient attribute; no subgroup report", cfg.split)
    return groups


def _folder_groups(member: Member, ids: list[str], cfg: DictConfig, options: dict) -> pd.DataFrame | None:
    """The subgroups of a folder's images, from ``metadata=CSV`` (none without it, unless subgroups names some)."""
    if options["subgroups"] == "none" or (cfg.metadata is None and options["subgroups"] == "auto"):
        return None
    metadata = None if cfg.metadata is None else read_metadata_csv(Path(cfg.metadata).expanduser(), ids,
                                                                   _sites(member.module.hparams))
    return subgroups_of(metadata, options["subgroups"], options["subgroup_age_bands"],
                        f"images={cfg.images} (metadata={cfg.metadata})")


def _sites(hp) -> tuple[str, ...]:
    """The anatomic sites a checkpoint knows: its metadata encoding's, else its training layout's."""
    if hp.metadata:
        return tuple(MetadataEncoding.from_dict(hp.metadata).sites)
    layout = LAYOUTS.get((hp.dataset or {}).get("layout"))
    return layout.sites if layout else ()


def _write_subgroups(report: dict, out: Path, figure: bool) -> None:
    """``subgroups.json``, ``subgroups.csv`` and, with ``figure``, ``plots/subgroups.png``."""
    write_json(out / "subgroups.json", report)
    write_atomic(out / "subgroups.csv", subgroup_table(report).to_csv(index=False))
    if figure:
        plots.plot_subgroups(report, HEADLINE, out / "plots" / "subgroups.png")


def _prepared_split(member: Member, cfg: DictConfig, options: dict) -> tuple[IsicDataModule, Dataset]:
    """The member's DataModule, set up and checked, and the split it reports on."""
    hp = member.module.hparams
    datamodule = checkpoint_datamodule(hp, options)
    if datamodule.classes != list(hp.classes):
        raise LesionError("dataset", f"classes {datamodule.classes} differ from the checkpoint's {list(hp.classes)}",
                          "evaluate on the dataset layout the model was trained on")
    datamodule.prepare_data()
    datamodule.setup("test")
    on_validation = cfg.split == "val" or datamodule.split["test"] == "validation"
    if on_validation or cfg.calibrate:
        check_validation_split(hp.split, datamodule.split, member.path)
    if cfg.split == "test" and datamodule.split["test"] == "holdout":
        check_test_split(hp.split, datamodule.split, member.path)
    if cfg.calibrate and on_validation:
        raise LesionError("calibrate", "would fit the temperature on the validation images it then reports on "
                          f"({datamodule.root} has no test split)", "evaluate without calibrate=true")
    return datamodule, datamodule.val_set if cfg.split == "val" else datamodule.test_set


def _plots(members: list[Member], datamodule: IsicDataModule, probs: np.ndarray, labels: np.ndarray, report: dict,
           cfg: DictConfig, out: Path) -> None:
    """The figures of ``plots/``; a single model's training curves when its run's log is next to it."""
    classes, hp = datamodule.classes, members[0].module.hparams
    figures = out / "plots"
    plots.plot_confusion(report["confusion"], classes, figures / "confusion.png",
                         title=f"{datamodule.layout.name} {cfg.split}")
    plots.plot_roc(probs, labels, classes, figures / "roc.png")
    plots.plot_reliability(probs, labels, figures / "reliability.png", ece=report["ece"])
    plots.plot_class_distribution(labels, classes, figures / "class_distribution.png",
                                  title=f"{datamodule.layout.name} {cfg.split}: images per class")
    training_log = _run_dir_log(members[0].path) if len(members) == 1 else None
    if training_log is not None:
        plots.plot_training_curves(training_log, figures / "training_curves.png")
    samples = [datamodule.train_set[i] for i in range(min(16, len(datamodule.train_set)))]
    plots.plot_augmented_samples(torch.stack([s[0] for s in samples]), [s[-1] for s in samples], classes,
                                 hp.mean, hp.std, figures / "augmented_samples.png")
