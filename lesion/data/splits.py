"""Seeded stratified hold-out and k-fold splits of the training split, by image or by lesion.

With lesion groupings (several images of one lesion, or of one patient), every split keeps all
images of a group on one side: images of the same lesion on both sides leak and inflate
validation scores. A grouped hold-out takes the requested share of the images to within half a
group (:func:`grouped_holdout`); grouped folds are scikit-learn's ``StratifiedGroupKFold``.
"""

from __future__ import annotations

import numpy as np

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


def _class_cost(held: np.ndarray, target: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """How far hold-out class counts (…×C) are from their targets: squared deviations relative to class size."""
    return ((held - target) ** 2) @ weight


def grouped_holdout(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int,
                    where: str = "dataset.val_fraction", keep_groups: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (keep, holdout) with every group on one side, holding out ``fraction`` of the images.

    Groups are visited in a seeded random order, pass after pass, each moving to the other side
    when that brings every class's held count nearer ``fraction`` of the class (squared deviations
    relative to class size, so that a rare class counts as much as a common one), until no move
    does. Then, while moving a group brings the hold-out's size nearer ``fraction`` of all images,
    the move that keeps the classes nearest their shares is made. So the hold-out holds
    ``fraction`` of the images to within half a group, and each class as near its share as whole
    groups allow. Both sides keep at least one group (then within one group's size), and the kept
    side at least ``keep_groups``: a test hold-out leaves the groups its validation split needs.

    Args:
        labels: class index per image (N,).
        groups: lesion or patient id per image (N,).
        fraction: share of the images to hold out, in (0, 1).
        seed: seed of the visiting order.
        where: the option that asked for the hold-out, named in an error.
        keep_groups: the fewest groups the kept side must have.

    Returns:
        Sorted index arrays ``keep`` and ``holdout``.
    """
    names, group_of = np.unique(groups, return_inverse=True)
    if len(names) < 2:
        raise LesionError(where, f"all {len(labels)} images are of one lesion or patient, so none can be held out",
                          "add images of other lesions, or use dataset.split_by=image")
    if len(names) <= keep_groups:
        raise LesionError(where, f"{len(names)} lesions or patients cannot fill this hold-out and leave the "
                          f"{keep_groups} the other splits need", "add images of other lesions, or use dataset.split_by=image")
    classes, class_of = np.unique(labels, return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(names))
    counts = np.zeros((len(names), len(classes)))
    np.add.at(counts, (group_of, class_of), 1)
    counts = counts[order]  # groups in visiting order: ties below go to the earlier visited
    target, weight = fraction * counts.sum(0), 1 / counts.sum(0)
    held, held_counts = np.zeros(len(names), dtype=bool), np.zeros(len(classes))
    improved = True
    while improved:  # ends: every move lowers the cost, and there are finitely many hold-outs
        improved = False
        for g in range(len(names)):
            after = held_counts - counts[g] if held[g] else held_counts + counts[g]
            if _class_cost(after, target, weight) < _class_cost(held_counts, target, weight):
                held[g], held_counts, improved = ~held[g], after, True

    def moved() -> np.ndarray:
        """The hold-out's class counts after moving each group to the other side."""
        return held_counts + np.where(held[:, None], -counts, counts)

    wanted = fraction * len(labels)
    while True:
        after = moved()
        nearer = np.abs(after.sum(1) - wanted) < abs(held_counts.sum() - wanted)
        if not nearer.any():
            break
        g = np.flatnonzero(nearer)[np.argmin(_class_cost(after[nearer], target, weight))]
        held[g], held_counts = ~held[g], after[g]
    if held.all() or not held.any():  # every group is larger than twice the share (or its rest)
        after = moved()
        g = int(np.argmin(_class_cost(after, target, weight)))
        held[g], held_counts = ~held[g], after[g]
    while (~held).sum() < keep_groups:  # give back the held group whose return keeps the classes nearest
        after = moved()
        g = np.flatnonzero(held)[np.argmin(_class_cost(after[held], target, weight))]
        held[g], held_counts = False, after[g]
    held_rows = held[np.argsort(order)][group_of]
    return np.flatnonzero(~held_rows), np.flatnonzero(held_rows)


def grouped_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> list[np.ndarray]:
    """Indices of each of ``n_folds`` lesion-grouped, class-stratified folds (seeded)."""
    if len(set(groups.tolist())) < n_folds:
        raise LesionError("dataset.fold", f"{len(set(groups.tolist()))} lesions cannot fill {n_folds} folds",
                          "use fewer folds")
    if np.bincount(labels).max() < n_folds:
        raise LesionError("dataset.fold", f"no class has {n_folds} images, as {n_folds} stratified folds need",
                          "use fewer folds, or add images")
    # Imported here: the options read this module (parse_fold) before any work.
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [held for _, held in splitter.split(np.zeros(len(labels)), labels, groups)]


def split_indices(labels: np.ndarray, seed: int, fraction: float | None = None, fold: tuple[int, int] | None = None,
                  groups: np.ndarray | None = None, where: str = "dataset.val_fraction",
                  keep_groups: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: a hold-out of ``fraction``, or fold ``k`` of ``K`` (1-based).

    Args:
        labels: class index per image.
        seed: seed of the split.
        fraction: share held out (when ``fold`` is ``None``).
        fold: ``(k, K)`` for k-fold cross-validation.
        groups: lesion id per image; when given, no lesion is on both sides.
        where: the option that asked for the hold-out, named in an error.
        keep_groups: a grouped hold-out leaves at least this many groups on the kept side.
    """
    if fold is None and groups is None:
        return stratified_holdout(labels, fraction, seed)
    if fold is None:
        return grouped_holdout(labels, groups, fraction, seed, where, keep_groups)
    k, n_folds = fold
    if groups is None:
        groups = np.arange(len(labels))  # every image its own group: a stratified k-fold
    held = grouped_folds(labels, groups, n_folds, seed)[k - 1]
    keep = np.setdiff1d(np.arange(len(labels)), held)
    return keep, np.sort(held)
