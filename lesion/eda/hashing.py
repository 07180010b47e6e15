"""Perceptual hashes of square images and the search for near-duplicate pairs among them.

DCT pHash (C. Zauner, "Implementation and Benchmarking of Perceptual Image Hash Functions",
2010; the pHash library): the grey image is box-filtered down to 32×32, transformed by a 2-D
DCT-II, and the 8×8 lowest frequencies without the DC term (rows and columns 1–8) give 64 bits,
each set when its coefficient exceeds the median of the 64 (so nearly every hash has 32 bits set,
and distances are even). Copies, re-encoded JPEGs, resized copies and small brightness or
contrast changes differ in a few bits; unrelated images in about half of them (32: the median
over the 555 real UDA-1 images, whose closest distinct pair is 8 bits apart).

Computed here for a whole batch at once: box filter and the 8 DCT rows are one 8×S matrix ``P``,
so the coefficients of an S×S grey image ``G`` are ``P·G·Pᵀ`` (two matrix products; the grey
weights are folded into the first).

Pairs are found with multi-index hashing (Norouzi, Punjani and Fleet, "Fast Search in Hamming
Space with Multi-Index Hashing", CVPR 2012): the 64 bits are cut into ``m`` bands, and two hashes at
most ``d`` bits apart differ in at most ``⌊d/m⌋`` bits of some band (pigeonhole). So each band's
values are sorted once, every hash looks up the values within ``⌊d/m⌋`` bits of its own in each
band (binary search), and only those candidates are compared in full (XOR, popcount); a pair is
kept in the first band that finds it, so each is listed once. The bands are chosen to minimise the
expected work for hashes spread over all 64 bits (about n·log n lookups plus n²/2^(64/m) candidates
per lookup pattern); where no choice beats comparing every pair (large ``d``), every pair is
compared, one block of rows at a time. Either way the pairs are exactly those of the full
distance matrix, and memory is bounded by the block of candidates compared per step.

Caveats: the hash sees what it is given, here the cached centred square, so two photographs of
one lesion framed differently, or mirrored and rotated copies, are not found; a small distance
between dermoscopy images that only look alike (a round dark lesion on plain skin) is possible,
which is why pairs are listed with their thumbnails for a person to judge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np

SIDE = 32  # the grey image is reduced to SIDE×SIDE before the DCT
BITS = 8  # 8×8 low-frequency coefficients: 64-bit hashes
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 grey, as PIL's convert("L")
HASH_BITS = BITS * BITS
# Relative costs of the pair search's steps (measured on two cores: ~13 ns, ~30 ns, ~4 ns), in units of
# one candidate pair compared: a step of a binary search, and a pair of the full comparison.
_LOOKUP_COST = 0.5
_PAIR_COST = 0.15


def box_filter(size: int, side: int = SIDE) -> np.ndarray:
    """The side×size matrix ``W`` averaging each of ``side`` equal stretches of ``size`` pixels
    (area weights), so that ``W·G·Wᵀ`` is the size×size image ``G`` reduced to side×side."""
    edges = np.arange(side + 1) * (size / side)
    pixels = np.arange(size)
    overlap = np.minimum(edges[1:, None], pixels[None, :] + 1) - np.maximum(edges[:-1, None], pixels[None, :])
    return np.clip(overlap, 0, None) / (size / side)


def _dct_rows(side: int = SIDE) -> np.ndarray:
    """Rows 1..BITS of the orthonormal DCT-II matrix of length ``side`` (the DC row left out)."""
    u, x = np.arange(1, BITS + 1)[:, None], np.arange(side)[None, :]
    return np.sqrt(2 / side) * np.cos(np.pi * (2 * x + 1) * u / (2 * side))


def projection(size: int) -> np.ndarray:
    """The BITS×size matrix ``P`` taking an image side to its low DCT frequencies (box filter, then DCT)."""
    return (_dct_rows() @ box_filter(size)).astype(np.float32)


def phash(images: np.ndarray) -> np.ndarray:
    """64-bit DCT pHash of every image of a batch.

    Args:
        images: B×S×S×3 uint8 (RGB squares) or B×S×S (grey), any integer or float type.

    Returns:
        (B,) uint64; the first coefficient (row 1, column 1) is the most significant bit.
    """
    images = np.asarray(images)
    if images.ndim not in (3, 4) or images.shape[1] != images.shape[2]:
        raise ValueError(f"expected B×S×S(×3) square images, got shape {images.shape}")
    batch, size = images.shape[:2]
    if batch == 0:
        return np.zeros(0, dtype=np.uint64)
    p = projection(size)
    pixels = images.astype(np.float32, copy=False)
    if images.ndim == 4:
        # Column transform with the grey weights folded in: (B·S, S·3) @ (S·3, BITS).
        right = (p.T[:, None, :] * LUMA.astype(np.float32)[None, :, None]).reshape(size * 3, BITS)
        columns = pixels.reshape(batch * size, size * 3) @ right
    else:
        columns = pixels.reshape(batch * size, size) @ p.T
    coefficients = np.matmul(p, columns.reshape(batch, size, BITS))  # rows: BITS×S @ S×BITS per image
    flat = coefficients.reshape(batch, BITS * BITS)
    bits = flat > np.median(flat, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def hash_hex(value: int | np.integer) -> str:
    """A hash as 16 hexadecimal digits (the usual way to print a pHash)."""
    return f"{int(value):016x}"


def _popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of every uint64 (uint8 result)."""
    if hasattr(np, "bitwise_count"):  # NumPy ≥ 2.0
        return np.bitwise_count(values)
    table = np.array([bin(k).count("1") for k in range(256)], dtype=np.uint8)
    return table[values.view(np.uint8)].reshape(*values.shape, 8).sum(-1, dtype=np.uint8)


def distance(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Hamming distance between hashes (broadcast), 0–64."""
    return _popcount(np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)))


@dataclass(frozen=True)
class Pairs:
    """Pairs of rows ``first[k] < second[k]`` whose hashes are ``distances[k]`` bits apart,
    sorted by distance, then rows."""

    first: np.ndarray
    second: np.ndarray
    distances: np.ndarray

    def __len__(self) -> int:
        return len(self.first)


class TooManyPairs(ValueError):
    """The threshold matches more pairs than can be listed: it no longer tells duplicates apart."""


def close_pairs(hashes: np.ndarray, max_distance: int, max_pairs: int = 1_000_000,
                block_elements: int = 1 << 20, bands: int | None = None) -> Pairs:
    """Every pair of hashes at most ``max_distance`` bits apart.

    Args:
        hashes: (N,) uint64.
        max_distance: largest Hamming distance of a pair, 0–64.
        max_pairs: refuse (:class:`TooManyPairs`) once more pairs than this are found.
        block_elements: candidate pairs compared per step (bounds the memory).
        bands: bands of the multi-index, 1 to ``min(max_distance + 1, 64)``; 0 compares every pair;
            ``None`` chooses (:func:`index_bands`). The pairs found do not depend on it.

    Returns:
        The pairs, each once (``first < second``).
    """
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    bands = index_bands(len(hashes), max_distance) if bands is None else bands
    if not 0 <= bands <= min(max_distance + 1, HASH_BITS):
        raise ValueError(f"bands must be 0 to {min(max_distance + 1, HASH_BITS)} for max_distance={max_distance}")
    found = _Found(max_pairs)
    if bands == 0:
        _all_pairs(hashes, max_distance, block_elements, found)
    else:
        _indexed_pairs(hashes, max_distance, bands, block_elements, found)
    return found.pairs()


def _widths(bands: int) -> list[int]:
    """Bits of each of ``bands`` bands of a 64-bit hash, as equal as can be."""
    return [HASH_BITS // bands + (k < HASH_BITS % bands) for k in range(bands)]


def _patterns(width: int, radius: int) -> int:
    """How many values lie within ``radius`` bits of one value of ``width`` bits."""
    return sum(math.comb(width, k) for k in range(radius + 1))


def index_bands(n: int, max_distance: int) -> int:
    """The number of bands that minimises the expected work of :func:`close_pairs` for ``n`` hashes
    spread over all 64 bits, or 0 when comparing every pair is cheaper."""
    log_n = math.log2(n + 2)

    def work(bands: int) -> float:
        radius = max_distance // bands
        return sum(_patterns(w, radius) * (_LOOKUP_COST * n * log_n + n * n / 2**w) for w in _widths(bands))

    best = min(range(1, min(max_distance + 1, HASH_BITS) + 1), key=work)
    return best if work(best) < _PAIR_COST * n * n / 2 else 0


class _Found:
    """The pairs found so far, refusing more than ``limit``."""

    def __init__(self, limit: int):
        self.limit, self.count, self.parts = limit, 0, []

    def add(self, first: np.ndarray, second: np.ndarray, distances: np.ndarray) -> None:
        self.count += len(first)
        if self.count > self.limit:
            raise TooManyPairs(f"more than {self.limit} pairs")
        self.parts.append((first, second, distances))

    def pairs(self) -> Pairs:
        if not self.parts:
            empty = np.zeros(0, dtype=np.int64)
            return Pairs(empty, empty, np.zeros(0, dtype=np.uint8))
        first, second, distances = (np.concatenate(column) for column in zip(*self.parts))
        order = np.lexsort((second, first, distances))
        return Pairs(first[order].astype(np.int64), second[order].astype(np.int64),
                     distances[order].astype(np.uint8))


def _all_pairs(hashes: np.ndarray, max_distance: int, block_elements: int, found: _Found) -> None:
    """Compare one block of rows with all later rows at a time (XOR, popcount)."""
    n = len(hashes)
    rows = max(1, block_elements // max(n, 1))
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        d = distance(hashes[start:stop, None], hashes[None, start:])
        # Only the upper triangle: row i (absolute start + r) against columns j > i.
        d[np.tril_indices(stop - start)] = 255
        r, c = np.nonzero(d <= max_distance)
        found.add(r + start, c + start, d[r, c])


def _flips(width: int, radius: int) -> np.ndarray:
    """Every value of ``width`` bits with at most ``radius`` bits set (uint64), 0 first."""
    return np.array([sum(1 << b for b in bits) for r in range(radius + 1) for bits in combinations(range(width), r)],
                    dtype=np.uint64)


def _indexed_pairs(hashes: np.ndarray, max_distance: int, bands: int, block_elements: int, found: _Found) -> None:
    """Multi-index hashing: candidates from sorted band values within ``max_distance // bands`` bits."""
    radius, widths = max_distance // bands, _widths(bands)
    shifts = np.cumsum([0, *widths[:-1]])
    values = [(hashes >> np.uint64(s)) & np.uint64((1 << w) - 1) for s, w in zip(shifts, widths)]
    for band, (own, width) in enumerate(zip(values, widths)):
        order = np.argsort(own, kind="stable")
        ordered = own[order]
        for flip in _flips(width, radius):
            wanted = own ^ flip
            low = np.searchsorted(ordered, wanted, "left")
            counts = np.searchsorted(ordered, wanted, "right") - low
            for first, second in _candidates(low, counts, order, block_elements):
                keep = first < second  # each pair once: found from both ends with the same flip
                first, second = first[keep], second[keep]
                d = distance(hashes[first], hashes[second])
                close = d <= max_distance
                # Kept by the first band in which the pair is within the radius: listed once.
                for earlier in values[:band]:
                    close &= _popcount(earlier[first] ^ earlier[second]) > radius
                found.add(first[close], second[close], d[close])


def _candidates(low: np.ndarray, counts: np.ndarray, order: np.ndarray, block_elements: int):
    """Pairs (row, ``order[low[row] + k]``) for every ``k < counts[row]``, about ``block_elements`` at a time."""
    rows = np.flatnonzero(counts)
    sizes = counts[rows]
    ends = np.cumsum(sizes)
    start = 0
    while start < len(rows):
        done = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, done + block_elements, "right")))
        chunk, chunk_sizes = rows[start:stop], sizes[start:stop]
        first = np.repeat(chunk, chunk_sizes)
        within = np.arange(len(first)) - np.repeat(np.cumsum(chunk_sizes) - chunk_sizes, chunk_sizes)
        yield first, order[np.repeat(low[chunk], chunk_sizes) + within]
        start = stop
