"""Seeded stratified hold-out and k-fold splits of the training split, by image or by lesion.

With lesion groupings (several images of one lesion), every split keeps all images of a lesion
on one side (scikit-learn ``StratifiedGroupKFold``): images of the same lesion on both sides
leak and inflate validation scores.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from lesion.errors import LesionError


def parse_fold(where: str, fold: object) -> tuple[int, int]:
    """``"k/K"`` → ``(k, K)`` with 1 ≤ k ≤ K and K ≥ 2."""
    try:
        k, n = (int(part) for part in str(fold).split("/"))
    except ValueError:
        k, n = 0, 0
    if not (n >= 2 and 1 <= k <= n):
        raise LesionError(where, f"'{fold}' is not k/K with 1 ≤ k ≤ K and K ≥ 2", "e.g. dataset.fold=1/5")
    return k, n


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (keep, holdout), taking ``fraction`` of every class.

    Every class with at least 2 samples puts at least one into the hold-out and keeps at least
    one, so a rare class is neither lost from training nor absent from validation.

    Args:
        labels: class index per sample (N,).
        fraction: share of each class to hold out, in (0, 1).
        seed: seed of the permutation.

    Returns:
        Sorted index arrays ``keep`` and ``holdout``.
    """
    rng = np.random.default_rng(seed)
    keep, holdout = [], []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_out = int(round(fraction * len(members)))
        if len(members) >= 2:
            n_out = min(max(n_out, 1), len(members) - 1)
        else:
            n_out = 0
        holdout.append(members[:n_out])
        keep.append(members[n_out:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(holdout))


def grouped_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int,
                  where: str = "dataset.fold") -> list[np.ndarray]:
    """Indices of each of ``n_folds`` lesion-grouped, class-stratified folds (seeded).

    Args:
        where: the option that asked for the folds, named in an error.
    """
    fix = "use fewer folds" if where == "dataset.fold" else "use a larger dataset.val_fraction (fewer folds)"
    if len(set(groups.tolist())) < n_folds:
        raise LesionError(where, f"{len(set(groups.tolist()))} lesions cannot fill {n_folds} folds", fix)
    if np.bincount(labels).max() < n_folds:
        raise LesionError(where, f"no class has {n_folds} images, as {n_folds} stratified folds need",
                          f"{fix}, or add images")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [held for _, held in splitter.split(np.zeros(len(labels)), labels, groups)]


def split_indices(labels: np.ndarray, seed: int, fraction: float | None = None, fold: tuple[int, int] | None = None,
                  groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: a hold-out of ``fraction``, or fold ``k`` of ``K`` (1-based).

    Args:
        labels: class index per image.
        seed: seed of the split.
        fraction: share held out (when ``fold`` is ``None``).
        fold: ``(k, K)`` for k-fold cross-validation.
        groups: lesion id per image; when given, no lesion is on both sides.
    """
    if fold is None and groups is None:
        return stratified_holdout(labels, fraction, seed)
    k, n_folds = fold if fold is not None else (1, max(2, int(round(1 / fraction))))
    if groups is None:
        groups = np.arange(len(labels))  # every image its own group: a stratified k-fold
    held = grouped_folds(labels, groups, n_folds, seed, "dataset.fold" if fold is not None else "dataset.val_fraction")[k - 1]
    keep = np.setdiff1d(np.arange(len(labels)), held)
    return keep, np.sort(held)
