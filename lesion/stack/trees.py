"""Gradient-boosted trees over LightGBM, XGBoost or CatBoost, cross-fitted on the image models' own folds.

Each library is reached through its scikit-learn estimator, built from the options of its file
in ``conf/stack/`` (the same words for what they share: ``rounds``, ``learning_rate``, ``depth``,
``subsample``, ``colsample``, ``l2``). Missing values (NaN) are each library's own business:
all three learn on which side of a split they go.

:func:`cross_fit` trains, for every fold k of the image models, trees on the rows the image
model of fold k trained on and predicts the rows it validated on: so the trees validate on the
same patients as the image models, and a row's stacked score comes from trees that never saw it,
just as its image score came from a model that never saw it. Each fold's trees are trained once
per seed and averaged; the test rows get the mean over every fold and seed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lesion.errors import LesionError

log = logging.getLogger(__name__)


def _lightgbm(options: Mapping, seed: int) -> object:
    from lightgbm import LGBMClassifier

    return LGBMClassifier(n_estimators=options["rounds"], learning_rate=options["learning_rate"],
                          max_depth=options["depth"], num_leaves=options["leaves"],
                          min_child_samples=options["min_child_samples"], subsample=options["subsample"],
                          subsample_freq=1, colsample_bytree=options["colsample"], reg_lambda=options["l2"],
                          importance_type="gain", random_state=seed, deterministic=True, force_row_wise=True,
                          verbose=-1)


def _xgboost(options: Mapping, seed: int) -> object:
    from xgboost import XGBClassifier

    return XGBClassifier(n_estimators=options["rounds"], learning_rate=options["learning_rate"],
                         max_depth=options["depth"], min_child_weight=options["min_child_weight"],
                         subsample=options["subsample"], colsample_bytree=options["colsample"],
                         reg_lambda=options["l2"], importance_type="gain", tree_method="hist", random_state=seed)


def _catboost(options: Mapping, seed: int) -> object:
    from catboost import CatBoostClassifier

    return CatBoostClassifier(iterations=options["rounds"], learning_rate=options["learning_rate"],
                              depth=options["depth"], bootstrap_type="Bernoulli", subsample=options["subsample"],
                              rsm=options["colsample"], l2_leaf_reg=options["l2"], random_seed=seed, verbose=False,
                              allow_writing_files=False)


# The estimator of each library (conf/stack/<name>.yaml), from its options and a seed.
ESTIMATORS: dict[str, Callable[[Mapping, int], object]] = {"lightgbm": _lightgbm, "xgboost": _xgboost,
                                                            "catboost": _catboost}


def fit_predict(options: Mapping, seed: int, x: np.ndarray, y: np.ndarray, predicted: Sequence[np.ndarray],
                num_classes: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Train one model of trees on ``x`` (N×F), ``y`` (class indices), then predict each matrix of ``predicted``.

    Classes without a training row get probability 0 (e.g. ISIC 2019's UNK).

    Returns:
        Each matrix's probabilities (M×``num_classes``), and each feature's share of the model's importance
        (gain; CatBoost: prediction-value change).

    Raises:
        LesionError: the rows hold fewer than two classes.
    """
    present = np.unique(y)
    if len(present) < 2:
        raise LesionError("sweep", f"a fold's trees would train on images of one class only ({len(y)} images)",
                          "stack a sweep with fewer folds, or more images of the rare classes")
    model = ESTIMATORS[options["name"]](options, seed)
    model.fit(x, np.searchsorted(present, y))
    out = []
    for rows in predicted:
        probs = np.zeros((len(rows), num_classes))
        if len(rows):
            probs[:, present] = model.predict_proba(rows)
        out.append(probs)
    importance = np.asarray(model.feature_importances_, dtype=np.float64)
    total = importance.sum()
    return out, importance / total if total > 0 else importance


@dataclass(frozen=True)
class FoldRows:
    """The rows fold k's trees trained on and validated on."""

    fold: int
    train: np.ndarray
    val: np.ndarray


@dataclass(frozen=True)
class CrossFit:
    """Cross-fitted trees' predictions.

    Attributes:
        oof: N×C out-of-fold probabilities of the training rows.
        test: M×C mean probabilities of the test rows over every fold and seed.
        importance: each feature's mean share of importance over every fold and seed.
        folds: the rows of each fold.
    """

    oof: np.ndarray
    test: np.ndarray
    importance: np.ndarray
    folds: list[FoldRows]


def cross_fit(options: Mapping, x: np.ndarray, y: np.ndarray, folds: np.ndarray, test: np.ndarray,
              seeds: Sequence[int], num_classes: int) -> CrossFit:
    """Trees trained on the image models' folds (module docstring).

    Args:
        options: the ``stack`` options (the library's ``name`` and its parameters).
        x: N×F features of the training rows; ``y``: their class indices.
        folds: (N,) the fold (1…K) whose image model validated on each row.
        test: M×F features of the test rows (M may be 0).
        seeds: the trees' seeds.
        num_classes: C.
    """
    oof, test_probs = np.zeros((len(x), num_classes)), np.zeros((len(test), num_classes))
    importance = np.zeros(x.shape[1])
    rows = [FoldRows(int(k), np.flatnonzero(folds != k), np.flatnonzero(folds == k)) for k in np.unique(folds)]
    models = len(rows) * len(seeds)
    for fold in rows:
        for seed in seeds:
            (val, tested), shares = fit_predict(options, seed, x[fold.train], y[fold.train], [x[fold.val], test],
                                                num_classes)
            oof[fold.val] += val / len(seeds)
            test_probs += tested / models
            importance += shares / models
        log.info("fold %d: %s trees trained on %d images × %d seed(s), validated on %d", fold.fold, options["name"],
                 len(fold.train), len(seeds), len(fold.val))
    return CrossFit(oof, test_probs, importance, rows)
