"""Near-duplicate images within and across the splits of a dataset: the leakage check.

An image of the test split that is a copy (or a re-encoded, resized or slightly edited copy) of a
training image inflates every test figure. Each image is hashed (:func:`lesion.eda.hashing.phash`
of its cached square) and every pair of images of the dataset whose hashes differ in at most
``max_distance`` bits is a candidate; pairs across splits (train–val, train–test, val–test) are
the leaks, pairs within a split are counted too (several images of one lesion, or published twice).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations_with_replacement

import numpy as np

from lesion.eda.hashing import close_pairs


@dataclass(frozen=True)
class Image:
    """One image of a pair: its split, row in that split, id and class name."""

    split: str
    row: int
    id: str
    label: str


@dataclass(frozen=True)
class Pair:
    """Two images whose hashes are ``distance`` bits apart (``first`` in the earlier split)."""

    first: Image
    second: Image
    distance: int

    @property
    def across(self) -> bool:
        return self.first.split != self.second.split


@dataclass(frozen=True)
class Duplicates:
    """Every pair within ``max_distance`` bits, and the number of pairs per pair of splits.

    ``counts`` has a key for every pair of splits present, ``(a, b)`` with ``a`` not after ``b``
    in split order (``(a, a)``: within split ``a``), zero included.
    """

    max_distance: int
    pairs: list[Pair] = field(default_factory=list)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def across(self) -> list[Pair]:
        """Pairs across splits, closest first."""
        return [p for p in self.pairs if p.across]

    @property
    def within(self) -> list[Pair]:
        """Pairs within a split, closest first."""
        return [p for p in self.pairs if not p.across]


def find_duplicates(hashes: Mapping[str, np.ndarray], ids: Mapping[str, Sequence[str]],
                    labels: Mapping[str, Sequence[str]], max_distance: int, max_pairs: int = 1_000_000) -> Duplicates:
    """Pairs of images of any splits whose hashes are at most ``max_distance`` bits apart.

    Args:
        hashes: per split (in split order), the (N,) uint64 hash of every image.
        ids, labels: per split, every image's id and class name.
        max_distance: largest Hamming distance of a pair.
        max_pairs: refuse (:class:`~lesion.eda.hashing.TooManyPairs`) beyond this many pairs.

    Returns:
        The pairs sorted by distance, then split pair, then ids.
    """
    splits = list(hashes)
    owner = np.concatenate([np.full(len(hashes[s]), k) for k, s in enumerate(splits)]).astype(np.int64)
    offset = np.concatenate([np.arange(len(hashes[s])) for s in splits]).astype(np.int64)
    found = close_pairs(np.concatenate([np.asarray(hashes[s], dtype=np.uint64) for s in splits]),
                        max_distance, max_pairs)

    def image(k: int) -> Image:
        split, row = splits[owner[k]], int(offset[k])
        return Image(split, row, ids[split][row], labels[split][row])

    pairs = []
    for a, b, d in zip(found.first.tolist(), found.second.tolist(), found.distances.tolist()):
        first, second = sorted((image(a), image(b)), key=lambda i: (splits.index(i.split), i.row))
        pairs.append(Pair(first, second, d))
    pairs.sort(key=lambda p: (p.distance, splits.index(p.first.split), splits.index(p.second.split),
                              p.first.id, p.second.id))
    counts = {(a, b): 0 for a, b in combinations_with_replacement(splits, 2)}
    for pair in pairs:
        counts[pair.first.split, pair.second.split] += 1
    return Duplicates(max_distance, pairs, counts)
