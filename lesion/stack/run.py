"""``run(cfg)``: a K-fold sweep's image scores, tabular and patient-relative features stacked in gradient-boosted trees.

Called by ``stack.py`` and tests. Reads top to bottom: options checked → the sweep's fold models
loaded and their data rebuilt and checked (:mod:`lesion.stack.oof`) → the tabular columns chosen
(a training-only column refused) and read, the patients found → only then the fold models
predict → the features (:mod:`lesion.stack.features`) → trees cross-fitted on the image models'
folds (:mod:`lesion.stack.trees`) → the ``.hydra/`` record and the outputs written to ``out``:
``metrics.json``, ``oof.csv``, ``submission.csv``, ``importances.csv`` and ``importances.png``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from lesion.data.readers import find_grouping, read_groups
from lesion.errors import LesionError
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
    grouping = find_grouping(datamodule.layout, datamodule.root)
    if grouping is None or grouping.kind != "patient":
        kind = "no grouping file" if grouping is None else f"groups its images by {grouping.kind}, not by patient"
        log.warning("%s: %s: no patient-relative features", datamodule.layout.name, kind)
        return None
    return read_groups(datamodule.layout, datamodule.root, ids, strict=False)


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
    ids = list(tabular.index)
    patients = _patients(sweep, ids) if wanted["patient"] else None

    scores = sweep.scores()
    probs = np.concatenate([scores.pool.probs, *([scores.test.probs] if scores.test else [])])
    image = image_score_frame(probs, classes, tabular.index) if wanted["image"] else None
    table = feature_table(image, tabular, columns, patients)
    log.info("%d features (their names: metrics.json)", table.shape[1])
    x, n = table.to_numpy(), len(sweep.pool)
    labels = scores.pool.labels
    fit = cross_fit(options["stack"], x[:n], labels, scores.folds, x[n:], options["seeds"], len(classes))

    report = {
        "layout": layout.name, "classes": classes, "trees": options["stack"]["name"], "seeds": options["seeds"],
        "features": list(table.columns),
        "folds": [{"fold": rows.fold, "model": str(path), "train_images": len(rows.train), "val_images": len(rows.val),
                   "stacked": score_metrics(fit.oof[rows.val], labels[rows.val], classes),
                   "image": score_metrics(scores.pool.probs[rows.val], labels[rows.val], classes)}
                  for rows, path in zip(fit.folds, scores.models)],
        "oof": {"images": n, "stacked": score_metrics(fit.oof, labels, classes),
                "image": score_metrics(scores.pool.probs, labels, classes)},
        "test": None if scores.test is None else {
            "images": len(scores.test.ids), "stacked": score_metrics(fit.test, scores.test.labels, classes),
            "image": score_metrics(scores.test.probs, scores.test.labels, classes)},
    }
    out = Path(cfg.out)
    write_record(cfg, out)
    id_column = layout.id_column
    pool_columns = {**({"patient": patients[:n]} if patients is not None else {}), "fold": scores.folds,
                    "label": [classes[k] for k in labels], **probability_columns("image", scores.pool.probs, classes),
                    **probability_columns("stacked", fit.oof, classes)}
    write_atomic(out / "oof.csv", scores_table(sweep.pool, id_column, pool_columns).to_csv(index=False))
    if scores.test is not None:
        sent = submission(scores.test.ids, fit.test, classes, id_column)
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
                 headline(report["test"]["stacked"]), headline(report["test"]["image"]), out / "submission.csv")
    return report
