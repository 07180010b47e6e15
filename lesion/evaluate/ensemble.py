"""Ensembles: the members a ``ckpt`` option names, and how their class probabilities combine.

``ckpt`` is a checkpoint, a glob, a sweep folder (its jobs' ``checkpoints/best.ckpt``, in job
order), or a list of any of these. Members must share their classes; each preprocesses with its
own settings (input size, cache size, colour constancy, metadata). Their probabilities combine
image by image, matched by id (:func:`image_rows`).

- ``mean``: the average of the members' probabilities.
- ``rank`` (rank averaging, as the SIIM-ISIC 2020 winners): per member and class, each image's
  rank among the evaluated images (ties share their average rank), divided by the number of
  images; then the average over members. The scores order images per class (AUC) and pick a
  class per image (argmax), but they are not probabilities: rows do not sum to 1.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lesion.errors import LesionError

METHODS = ("mean", "rank")
_GLOB = frozenset("*?[")


def _job_order(path: Path) -> tuple:
    """Sweep jobs in number order (2 before 10), then by name."""
    job = path.parent.parent.name
    return (0, int(job), "") if job.isdigit() else (1, 0, job)


def member_checkpoints(ckpt: str | Sequence[str]) -> list[Path]:
    """The checkpoint files ``ckpt`` names (module docstring), in order, each once."""
    found: list[Path] = []
    for entry in [ckpt] if isinstance(ckpt, str) else list(ckpt):
        path = Path(entry).expanduser()
        if _GLOB & set(entry):
            matches = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
            if not matches:
                raise LesionError("ckpt", f"{entry} matches no file", "pass a pattern that matches .ckpt files")
            found += matches
        elif path.is_dir():
            jobs = sorted(path.glob("*/checkpoints/best.ckpt"), key=_job_order)
            if not jobs and (path / "checkpoints" / "best.ckpt").is_file():
                jobs = [path / "checkpoints" / "best.ckpt"]
            if not jobs:
                raise LesionError("ckpt", f"{path} holds no <job>/checkpoints/best.ckpt",
                                  "pass a sweep folder (train.py -m), a run folder or .ckpt files")
            found += jobs
        else:
            found.append(path)
    seen = set()
    for path in found:
        if path.resolve() in seen:
            raise LesionError("ckpt", f"{path} is named twice", "name each member once")
        seen.add(path.resolve())
    return found


def image_rows(reference: Sequence[str], ids: Sequence[str]) -> np.ndarray | None:
    """The row of ``ids`` holding each image of ``reference``, in ``reference`` order.

    Members list their images in the order of their own data (e.g. their copy of a ground-truth
    CSV): their probabilities combine row by row only once matched by image id.

    Returns:
        (N,) int64 row indices, or ``None`` unless both list the same images, each once.
    """
    row_of = {image: row for row, image in enumerate(ids)}
    if len(row_of) != len(ids) or len(reference) != len(ids) or row_of.keys() != set(reference):
        return None
    return np.array([row_of[image] for image in reference], dtype=np.int64)


def combine(probs: Sequence[np.ndarray], method: str = "mean") -> np.ndarray:
    """The ensemble's N×K scores from each member's N×K probabilities (same images, same class order)."""
    if method not in METHODS:
        raise LesionError("ensemble", f"'{method}' is not one of {', '.join(METHODS)}", f"use one of {', '.join(METHODS)}")
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in probs])  # M×N×K
    if method == "mean":
        return stacked.mean(0)
    # Imported here: the options read this module (METHODS) before any work.
    from scipy.stats import rankdata

    return (rankdata(stacked, method="average", axis=1) / stacked.shape[1]).mean(0)
