"""Seeded stratified hold-out, used when a dataset ships no validation split."""

from __future__ import annotations

import numpy as np


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
