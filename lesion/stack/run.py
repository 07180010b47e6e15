"""``run(cfg)``: a K-fold sweep's image scores, tabular and patient-relative features stacked in gradient-boosted trees.

Called by ``stack.py`` and tests. Reads top to bottom: options checked → the sweep's fold models
loaded and their data rebuilt and checked (:mod:`lesion.stack.oof`) → the tabular columns chosen
(a training-only column refused) and read, the patients found → only then the fold models
predict → the features (:mod:`lesion.stack.features`) → trees cross-fitted on the image models'
folds (:mod:`lesion.stack.trees`) → the ``.hydra/`` record and the outputs written to ``out``:
``metrics.json``, ``oof.csv``, ``submission.csv``, ``importances.csv`` and ``importances.png``.
With ``images=`` (e.g. ISIC 2024's ``test-image.hdf5``) and its ``metadata=`` CSV, those images are
prepared with the rest, before anything is predicted, scored by every fold model (their mean), and
predicted by the trees: ``predictions.csv``, and ``submission.csv`` is theirs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from lesion.data.datamodule import default_workers
from lesion.data.images import image_id_of
from lesion.data.readers import find_grouping, patient_ids, read_csv
from lesion.data.unlabelled import FolderImages
from lesion.errors import LesionError
from lesion.evaluate.ensemble import combine
from lesion.evaluate.folder import model_inputs
from lesion.evaluate.predict import predict, prediction_items
from lesion.files import write_atomic, write_json
from lesion.hydra_record import write_record
from lesion.stack.features import feature_table, image_score_frame
from lesion.stack.oof import FoldSweep
from lesion.stack.options import check_stack
from lesion.stack.report import (
    headline,
    importance_table,
    plot_importances,
    probability_columns,
    score_metrics,
    scores_table,
    submission,
)
from lesion.stack.tabular import read_tabular, select_columns
from lesion.stack.trees import cross_fit

log = logging.getLogger(__name__)


def _patients(sweep: FoldSweep, ids: list[str]) -> np.ndarray | None:
    """The patient of each of ``ids``, or ``None`` where the dataset groups its images otherwise (logged)."""
    datamodule = sweep.datamodules[0]
    patients = patient_ids(datamodule.layout, datamodule.root, ids)
    if patients is None:
        grouping = find_grouping(datamodule.layout, datamodule.root)
        kind = "no grouping file" if grouping is None else f"groups its images by {grouping.kind}, not by patient"
        log.warning("%s: %s: no patient-relative features", datamodule.layout.name, kind)
    return patients


def _given_patients(sweep: FoldSweep, csv: Path, ids: list[str]) -> np.ndarray:
    """The patient of each of ``ids`` from their metadata CSV (``metadata=``), in the dataset's patient column."""
    layout = sweep.datamodules[0].layout
    table = read_csv(csv, f"{layout.name} metadata CSV")
    column = next((g.group_column for g in layout.groupings if g.kind == "patient" and g.group_column in table.columns),
                  None)
    if column is None:
        raise LesionError(csv, "has no patient id column, and the trees read patient-relative features",
                          "use the images' metadata CSV as the dataset publishes it, or features.patient=false")
    id_column = next((c for c in (layout.id_column, "image") if c in table.columns), None)
    if id_column is None:
        raise LesionError(csv, f"has no image id column ({layout.id_column} or image)",
                          f"use the metadata CSV of these images as {layout.name} publishes it")
    patient_of = dict(zip((image_id_of(i) for i in table[id_column]), table[column]))
    return np.array([patient_of.get(i) or f"image:{i}" for i in ids], dtype=object)


def _given_images(sweep: FoldSweep, options: dict) -> list[FolderImages]:
    """``images=``, prepared for each fold model as its checkpoint says (nothing predicted yet)."""
    images = Path(options["images"]).expanduser()
    metadata = None if options["metadata"] is None else Path(options["metadata"]).expanduser()
    return [model_inputs(model, path, images, metadata) for model, path in zip(sweep.models, sweep.paths)]


def _score_given(sweep: FoldSweep, given: list[FolderImages], options: dict) -> np.ndarray:
    """The fold models' mean probabilities of the ``images=`` images."""
    workers = default_workers(options["num_workers"])
    each = [predict(model, DataLoader(prediction_items(images, model, 1), batch_size=options["batch_size"],
                                      num_workers=workers, pin_memory=model.device.type == "cuda"))[0]
            for model, images in zip(sweep.models, given)]
    log.info("%d fold models scored %d images", len(each), len(given[0]))
    return combine(each)


def run(cfg: DictConfig) -> dict:
    """Stack the sweep ``cfg.sweep`` and write the reports to ``cfg.out``.

    Returns:
        The report (``metrics.json``): per-fold, out-of-fold and test scores of the stacked trees and of the
        image models alone, and the features.
    """
    options = check_stack(OmegaConf.to_container(cfg, resolve=True))
    wanted = options["features"]
    sweep = FoldSweep.of(options)
    first = sweep.datamodules[0]
    layout, classes = first.layout, first.classes
    columns = select_columns(layout, wanted["columns"])
    if not columns.names and not wanted["image"]:
        raise LesionError("features.image", f"is false, and {layout.name} has no tabular columns: the trees would "
                          "have nothing to read", "use features.image=true")
    if not columns.names:
        log.warning("%s: no tabular columns: the trees read the image scores alone", layout.name)
    test_set = sweep.test_set
    parts = [(sweep.pool, first.val_set.table.split), *([(test_set.ids, test_set.table.split)] if test_set else [])]
    tabular = pd.concat([read_tabular(layout, first.root, split, ids, columns) for ids, split in parts])
    patients = _patients(sweep, list(tabular.index)) if wanted["patient"] else None
    given = _given_images(sweep, options) if options["images"] is not None else None
    if given is not None:
        csv = None if options["metadata"] is None else Path(options["metadata"]).expanduser()
        given_ids = given[0].ids
        tabular = pd.concat([tabular, read_tabular(layout, first.root, "test", given_ids, columns, csv)])
        if patients is not None:
            patients = np.concatenate([patients, _given_patients(sweep, csv, given_ids)])

    scores = sweep.scores()
    given_probs = _score_given(sweep, given, options) if given is not None else None
    probs = np.concatenate([scores.pool.probs, *([scores.test.probs] if scores.test else []),
                            *([given_probs] if given is not None else [])])
    image = image_score_frame(probs, classes, tabular.index) if wanted["image"] else None
    table = feature_table(image, tabular, columns, patients)
    log.info("%d features (their names: metrics.json)", table.shape[1])
    x, n = table.to_numpy(), len(sweep.pool)
    labels = scores.pool.labels
    fit = cross_fit(options["stack"], x[:n], labels, scores.folds, x[n:], options["seeds"], len(classes))
    n_test = 0 if scores.test is None else len(scores.test.ids)
    test_probs, given_stacked = fit.test[:n_test], fit.test[n_test:]
    pool_patients = None if patients is None else patients[:n]
    test_patients = None if patients is None else patients[n:n + n_test]

    report = {
        "layout": layout.name, "classes": classes, "trees": options["stack"]["name"], "seeds": options["seeds"],
        "features": list(table.columns),
        "folds": [{"fold": rows.fold, "model": str(path), "train_images": len(rows.train), "val_images": len(rows.val),
                   "stacked": score_metrics(fit.oof[rows.val], labels[rows.val], classes, _rows(pool_patients, rows.val)),
                   "image": score_metrics(scores.pool.probs[rows.val], labels[rows.val], classes,
                                          _rows(pool_patients, rows.val))}
                  for rows, path in zip(fit.folds, scores.models)],
        "oof": {"images": n, "stacked": score_metrics(fit.oof, labels, classes, pool_patients),
                "image": score_metrics(scores.pool.probs, labels, classes, pool_patients)},
        "test": None if scores.test is None else {
            "images": n_test, "stacked": score_metrics(test_probs, scores.test.labels, classes, test_patients),
            "image": score_metrics(scores.test.probs, scores.test.labels, classes, test_patients)},
        "predicted": None if given is None else {"images": len(given_stacked), "source": options["images"]},
    }
    out = Path(cfg.out)
    write_record(cfg, out)
    id_column = layout.id_column
    pool_columns = {**({"patient": patients[:n]} if patients is not None else {}), "fold": scores.folds,
                    "label": [classes[k] for k in labels], **probability_columns("image", scores.pool.probs, classes),
                    **probability_columns("stacked", fit.oof, classes)}
    write_atomic(out / "oof.csv", scores_table(sweep.pool, id_column, pool_columns).to_csv(index=False))
    if given is not None:
        given_columns = {**({"patient": patients[n + n_test:]} if patients is not None else {}),
                         **probability_columns("image", given_probs, classes),
                         **probability_columns("stacked", given_stacked, classes)}
        write_atomic(out / "predictions.csv", scores_table(given_ids, id_column, given_columns).to_csv(index=False))
        sent = submission(given_ids, given_stacked, classes, id_column)
        write_atomic(out / "submission.csv", sent.to_csv(index=False))
    elif scores.test is not None:
        sent = submission(scores.test.ids, test_probs, classes, id_column)
        write_atomic(out / "submission.csv", sent.to_csv(index=False))
    importances = importance_table(table.columns, fit.importance)
    write_atomic(out / "importances.csv", importances.to_csv(index=False))
    trees = f"{options['stack']['name']} on {len(sweep.paths)} folds × {len(options['seeds'])} seeds"
    plot_importances(importances, out / "importances.png", f"{layout.name}: {trees}")
    write_json(out / "metrics.json", report)
    log.info("%s out of fold: stacked %s; image models %s", layout.name, headline(report["oof"]["stacked"]),
             headline(report["oof"]["image"]))
    if report["test"] is not None:
        log.info("%s test (%d images): stacked %s; image models %s → %s", layout.name, report["test"]["images"],
                 headline(report["test"]["stacked"]), headline(report["test"]["image"]),
                 out / ("metrics.json" if given is not None else "submission.csv"))
    if given is not None:
        log.info("%d images of %s predicted → %s", len(given_stacked), options["images"], out / "submission.csv")
    return report


def _rows(values: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    return None if values is None else values[rows]
