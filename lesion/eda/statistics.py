"""Descriptive statistics of a dataset: colour per class, source image sizes, images per lesion,
patient metadata per class, skin tone per class and split.

Colour statistics are pooled over every pixel of a class's cached squares (the centred square of
each image, resized as training sees it), from per-image sums and sums of squares, in 0–255
units. They describe the squares, not the full images (borders and vignetting outside the
square are not counted).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

CHANNELS = ("R", "G", "B")
_EXACT_ROWS = 256  # rows per float32 partial sum: 256 × 255² < 2²⁴


def colour_sums(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image channel sums and sums of squares of a batch, exact.

    Summed down the pixel columns in float32 (contiguous memory: about ten times faster than a
    reduction over the interleaved channels), 256 rows at a time so that every partial sum of
    squares stays below 2²⁴ (256 × 255² < 2²⁴: exact in float32), then added in float64.

    Args:
        images: B×H×W×3, integer values 0–255 (any numeric type).

    Returns:
        Two B×3 float64 arrays: Σx and Σx² over each image's pixels.
    """
    pixels = np.asarray(images, dtype=np.float32)
    batch, height = pixels.shape[:2]
    rows = pixels.reshape(batch, height, -1)  # one image row of W×3 values per line
    sums = np.zeros((batch, rows.shape[2]))
    squares = np.zeros((batch, rows.shape[2]))
    for start in range(0, height, _EXACT_ROWS):
        chunk = rows[:, start:start + _EXACT_ROWS]
        sums += chunk.sum(axis=1)
        squares += np.einsum("brk,brk->bk", chunk, chunk)
    return sums.reshape(batch, -1, 3).sum(axis=1), squares.reshape(batch, -1, 3).sum(axis=1)


@dataclass(frozen=True)
class Colour:
    """Pixel colour of a group of images: mean and standard deviation per channel (R, G, B)."""

    images: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def pooled_colour(sums: np.ndarray, squares: np.ndarray, pixels_per_image: int) -> Colour:
    """Mean and (population) standard deviation over every pixel of the images given.

    Args:
        sums, squares: K×3 per-image Σx and Σx² (:func:`colour_sums`).
        pixels_per_image: pixels of each image (S²).
    """
    n = len(sums) * pixels_per_image
    if n == 0:
        nan = (float("nan"),) * 3
        return Colour(0, nan, nan)
    mean = sums.sum(0) / n
    variance = np.clip(squares.sum(0) / n - mean**2, 0, None)
    return Colour(len(sums), tuple(mean.tolist()), tuple(np.sqrt(variance).tolist()))


def colour_by_class(sums: np.ndarray, squares: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                    pixels_per_image: int) -> dict[str, Colour]:
    """:func:`pooled_colour` of each class (in class order; a class without images has NaN figures)."""
    labels = np.asarray(labels)
    return {name: pooled_colour(sums[labels == k], squares[labels == k], pixels_per_image)
            for k, name in enumerate(classes)}


@dataclass(frozen=True)
class Sizes:
    """Source image sizes of a split: ranges, median and the most common sizes."""

    images: int
    width: tuple[int, int, float]  # min, max, median
    height: tuple[int, int, float]
    megapixels: tuple[float, float, float]
    aspect: tuple[float, float, float]  # width / height
    common: list[tuple[tuple[int, int], int]]  # (width, height), images; most common first


def size_summary(sizes: np.ndarray, top: int = 5) -> Sizes:
    """Summary of N×2 (width, height) sizes; ``top`` most common sizes."""
    sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    w, h = sizes[:, 0], sizes[:, 1]

    def spread(values: np.ndarray) -> tuple:
        if len(values) == 0:
            return (0, 0, float("nan"))
        return (values.min().item(), values.max().item(), float(np.median(values)))

    common = Counter(map(tuple, sizes.tolist())).most_common(top)
    return Sizes(len(sizes), spread(w), spread(h), spread(w * h / 1e6), spread(w / np.maximum(h, 1)),
                 [((int(a), int(b)), k) for (a, b), k in common])


@dataclass(frozen=True)
class Groups:
    """Images per lesion (or per patient) of a split, from a grouping file.

    ``per_group``: how many groups have k images, for every k present. ``by_class``: per class,
    ``(images, groups)``. ``mixed``: groups whose images carry more than one label.
    """

    kind: str
    file: str
    images: int
    groups: int
    per_group: dict[int, int]
    by_class: dict[str, tuple[int, int]]
    mixed: int


def group_summary(groups: np.ndarray, labels: np.ndarray, classes: Sequence[str], kind: str, file: str) -> Groups:
    """How the images of a split fall into lesions (or patients).

    Args:
        groups: group id of every image (:func:`lesion.data.readers.read_groups`).
        labels: class index of every image.
        classes: class names.
        kind: ``"lesion"`` or ``"patient"``.
        file: the grouping file's name (for the report).
    """
    groups, labels = np.asarray(groups, dtype=object), np.asarray(labels)
    codes, sizes = np.unique(groups.astype(str), return_inverse=True, return_counts=True)[1:]
    per_group = Counter(sizes.tolist())
    by_class = {}
    for k, name in enumerate(classes):
        mine = labels == k
        by_class[name] = (int(mine.sum()), len(np.unique(codes[mine])))
    pairs = np.unique(np.stack([codes, labels]), axis=1)  # distinct (group, label)
    mixed = int((np.bincount(pairs[0], minlength=len(sizes)) > 1).sum())
    return Groups(kind, file, len(groups), len(sizes), dict(sorted(per_group.items())), by_class, mixed)


@dataclass(frozen=True)
class ClassMetadata:
    """One class's patient metadata: images, age (mean, sd, missing), sex, site and skin tone counts (``None`` =
    missing); ``skin_tone`` is ``None`` where the metadata has no skin tone."""

    images: int
    age_mean: float
    age_std: float
    age_missing: int
    sex: dict[str | None, int]
    site: dict[str | None, int]
    skin_tone: dict[str | None, int] | None = None


def skin_tones(frame: pd.DataFrame) -> dict[str | None, int] | None:
    """Images per Fitzpatrick type (``None``: missing) of a metadata table, or ``None`` when it has no skin tone."""
    if "skin_tone" not in frame.columns:
        return None
    return dict(Counter(frame["skin_tone"].where(frame["skin_tone"].notna(), None)))


def metadata_by_class(frames: Sequence[pd.DataFrame], labels: Sequence[np.ndarray],
                      classes: Sequence[str]) -> dict[str, ClassMetadata]:
    """Per class, the metadata of its images over the given splits (:func:`lesion.data.metadata.read_metadata`)."""
    frame = pd.concat(list(frames))
    label = np.concatenate(list(labels))
    out = {}
    for k, name in enumerate(classes):
        mine = frame[label == k]
        ages = mine["age"].dropna()
        out[name] = ClassMetadata(
            images=len(mine), age_mean=float(ages.mean()) if len(ages) else float("nan"),
            age_std=float(ages.std(ddof=1)) if len(ages) > 1 else float("nan"), age_missing=int(mine["age"].isna().sum()),
            sex=dict(Counter(mine["sex"].where(mine["sex"].notna(), None))),
            site=dict(Counter(mine["site"].where(mine["site"].notna(), None))), skin_tone=skin_tones(mine),
        )
    return out
