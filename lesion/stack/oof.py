"""Out-of-fold image scores of a K-fold sweep: every training image scored by the one fold model that never saw it.

A sweep ``train.py -m 'dataset.fold=1/K,…,K/K'`` trains K models: model k validates on fold k of
the *pool* (the training split less any test hold-out) and trains on the other folds. Its
probabilities on fold k are those images' out-of-fold (OOF) scores; the test images get the mean
of the K models' probabilities (:func:`lesion.evaluate.ensemble.combine`).

The fold runs write metrics, not per-image probabilities, so the scores are computed here from the
checkpoints; rebuilding each model's data as ``evaluate.py split=val`` does also checks its
validation images against the digest training recorded before any score is used. A sweep is
refused, before anything is predicted, unless its folds cover the pool exactly once: a missing or
repeated fold, models of different K or split seed, or a model of other data (another pool).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lesion.data.datamodule import IsicDataModule, LesionDataset
from lesion.data.splits import parse_fold
from lesion.device import resolve_device
from lesion.errors import LesionError
from lesion.evaluate.ensemble import combine, image_rows, member_checkpoints
from lesion.evaluate.predict import predict, prediction_items
from lesion.evaluate.rebuilt import (
    check_test_split,
    check_validation_split,
    checkpoint_datamodule,
)
from lesion.stack.options import SWEEP_FOLDER
from lesion.train.module import LesionClassifier

log = logging.getLogger(__name__)

_VALIDATION = {"holdout": "a hold-out", "official": "the official validation split"}
_SWEEP_FIX = "stack the fold models of one sweep: python train.py -m 'dataset.fold=1/K,…,K/K' (one dataset and seed)"


@dataclass(frozen=True)
class Scores:
    """Images with their labels and the fold models' class probabilities.

    Attributes:
        ids: the image ids.
        labels: class index per image.
        probs: N×C probabilities (OOF for the pool, the fold models' mean for the test images).
        split: the split table the images come from (``train`` for the pool and a test hold-out), where
            their tabular values are read.
    """

    ids: list[str]
    labels: np.ndarray
    probs: np.ndarray
    split: str


@dataclass(frozen=True)
class SweepScores:
    """A sweep's scores: the pool out of fold, each image's fold, and the test images (``None`` without any)."""

    pool: Scores
    folds: np.ndarray  # (N,) the fold (1…K) whose model validated on each pool image
    test: Scores | None
    models: list[Path]  # fold k's checkpoint at k − 1


def fold_order(records: Sequence[dict | None], paths: Sequence[Path]) -> list[int]:
    """Each model's fold k of a checked K-fold sweep, from the split records its checkpoint holds.

    Refuses a model validated on anything but a fold, folds of different K or split seed, a fold
    given twice and a fold missing.
    """
    folds = []
    for record, path in zip(records, paths):
        if record is None or record["validation"] != "fold":
            kind = "an unrecorded split" if record is None else _VALIDATION[record["validation"]]
            raise LesionError("sweep", f"{path} was validated on {kind}, not on a fold", _SWEEP_FIX)
        folds.append(parse_fold("sweep", record["fold"]))
    first, (_, n_folds), seed = paths[0], folds[0], records[0]["seed"]
    for path, record, (k, n) in zip(paths, records, folds):
        if n != n_folds:
            raise LesionError("sweep", f"{path} is fold {k}/{n} and {first} fold {folds[0][0]}/{n_folds}: folds of "
                              "different K", _SWEEP_FIX)
        if record["seed"] != seed:
            raise LesionError("sweep", f"{path} cut its folds with seed {record['seed']} and {first} with seed {seed}: "
                              "their folds overlap", _SWEEP_FIX)
    seen: dict[int, Path] = {}
    for path, (k, _) in zip(paths, folds):
        if k in seen:
            raise LesionError("sweep", f"fold {k}/{n_folds} twice: {seen[k]} and {path}", "keep one model per fold")
        seen[k] = path
    missing = sorted(set(range(1, n_folds + 1)) - set(seen))
    if missing:
        raise LesionError("sweep", f"fold {', '.join(f'{k}/{n_folds}' for k in missing)} missing "
                          f"({len(seen)} of {n_folds} folds found)",
                          "train the missing folds with the sweep's other options (dataset.fold=k/K), into the sweep")
    return [k for k, _ in folds]


def check_coverage(pool: Sequence[str], validated: Sequence[Sequence[str]], paths: Sequence[Path]) -> np.ndarray:
    """The fold (1…K, the position in ``validated``) of every pool image, refused unless the models' validation
    images cover ``pool`` exactly once.

    Args:
        pool: the images the folds were cut from.
        validated: fold k's validation images at k − 1.
        paths: fold k's checkpoint at k − 1, for the message.

    Returns:
        (N,) the fold of each image of ``pool``, in its order.
    """
    counts = Counter(image for images in validated for image in images)
    twice = [image for image, n in counts.items() if n > 1]
    if twice:
        holders = [str(path) for path, images in zip(paths, validated) if twice[0] in set(images)]
        raise LesionError("sweep", f"the folds score {len(twice)} training images more than once (e.g. {twice[0]}, "
                          f"validated by {' and '.join(holders)})", _SWEEP_FIX)
    members = set(pool)
    outside = [image for image in counts if image not in members]
    unscored = [image for image in pool if image not in counts]
    if outside or unscored:
        example = f"{outside[0]} is not a training image" if outside else f"e.g. {unscored[0]}"
        raise LesionError("sweep", f"the folds leave {len(unscored)} of the {len(pool)} training images unscored and "
                          f"score {len(outside)} others ({example})", _SWEEP_FIX)
    fold_of = {image: k for k, images in enumerate(validated, 1) for image in images}
    return np.array([fold_of[image] for image in pool], dtype=np.int64)


def pool_ids(datamodule: IsicDataModule) -> list[str]:
    """The images a set-up fold DataModule cut its folds from: its training split less any test hold-out."""
    held = set(datamodule.test_set.ids) if datamodule.split["test"] == "holdout" else set()
    return [image for image in datamodule.val_set.table.ids if image not in held]


@dataclass
class FoldSweep:
    """The K fold models of a sweep, in fold order, each with its rebuilt and checked data; nothing predicted yet.

    Build it with :meth:`of`; :meth:`scores` predicts.
    """

    models: list[LesionClassifier]
    paths: list[Path]
    datamodules: list[IsicDataModule]
    folds: np.ndarray  # (N,) of the pool, in its order
    pool: list[str]

    @classmethod
    def of(cls, options: dict) -> FoldSweep:
        """The checked sweep ``options["sweep"]`` (module docstring), its models on ``options["device"]``.

        Args:
            options: the checked ``stack.py`` options (``sweep``, ``dataset``, ``batch_size``, ``num_workers``,
                ``device``, ``trust_checkpoint``).
        """
        try:
            paths = member_checkpoints(options["sweep"])
        except LesionError as error:  # named by its own option
            raise LesionError("sweep", error.problem, f"pass {SWEEP_FOLDER}") from None
        device = resolve_device("device", options["device"])
        models = [LesionClassifier.load_from_checkpoint(path, device, weights_only=not options["trust_checkpoint"])
                  for path in paths]
        order = np.argsort(fold_order([m.hparams.split for m in models], paths))
        models, paths = [models[k] for k in order], [paths[k] for k in order]
        datamodules = []
        for model, path in zip(models, paths):
            datamodule = checkpoint_datamodule(model.hparams, options)
            datamodule.prepare_data()
            datamodule.setup("test")
            check_validation_split(model.hparams.split, datamodule.split, path)
            if datamodule.split["test"] == "holdout":
                check_test_split(model.hparams.split, datamodule.split, path)
            datamodules.append(datamodule)
        pools = [pool_ids(datamodule) for datamodule in datamodules]
        for path, pool in zip(paths[1:], pools[1:]):
            if pool != pools[0]:
                shared = len(set(pool) & set(pools[0]))
                raise LesionError("sweep", f"{path} was trained on other data than {paths[0]}: {len(pool)} and "
                                  f"{len(pools[0])} training images, {shared} shared", _SWEEP_FIX)
        folds = check_coverage(pools[0], [datamodule.val_set.ids for datamodule in datamodules], paths)
        tested = [datamodule.test_set.ids for datamodule in datamodules if datamodule.split["test"] != "validation"]
        if any(image_rows(tested[0], ids) is None for ids in tested[1:]):
            raise LesionError("sweep", f"the fold models test on other images ({paths[0]} on {len(tested[0])})",
                              _SWEEP_FIX)
        return cls(models, paths, datamodules, folds, pools[0])

    @property
    def test_set(self) -> LesionDataset | None:
        """The test images (the same for every fold model), ``None`` where the models test on their validation folds."""
        first = self.datamodules[0]
        return None if first.split["test"] == "validation" else first.test_set

    def scores(self) -> SweepScores:
        """Predict: each model on its validation fold (OOF) and on the test images (averaged over the models)."""
        first = self.datamodules[0]
        oof = np.zeros((len(self.pool), len(first.classes)))
        row_of = {image: row for row, image in enumerate(self.pool)}
        tested = []
        for k, (model, datamodule, path) in enumerate(zip(self.models, self.datamodules, self.paths), 1):
            probs, _ = predict(model, datamodule.loader(prediction_items(datamodule.val_set, model, 1)))
            oof[[row_of[image] for image in datamodule.val_set.ids]] = probs
            if self.test_set is not None:
                test, _ = predict(model, datamodule.loader(prediction_items(datamodule.test_set, model, 1)))
                tested.append(test[image_rows(self.test_set.ids, datamodule.test_set.ids)])
            log.info("fold %d/%d: %s scored %d validation images", k, len(self.models), path, len(datamodule.val_set))
        table = first.val_set.table
        table_row = {image: row for row, image in enumerate(table.ids)}
        pool = Scores(self.pool, table.labels[[table_row[image] for image in self.pool]], oof, table.split)
        test = None
        if self.test_set is not None:
            test = Scores(self.test_set.ids, self.test_set.labels, combine(tested), self.test_set.table.split)
        else:
            log.warning("%s: no test split (the fold models test on their validation folds): no test images to "
                        "predict, no submission", first.root)
        return SweepScores(pool, self.folds, test, self.paths)
