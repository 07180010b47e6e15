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
weights are folded into the first). Pairs are found by XOR and popcount of packed 64-bit hashes,
one block of rows against all later hashes at a time, so memory stays bounded.

Caveats: the hash sees what it is given, here the cached centred square, so two photographs of
one lesion framed differently, or mirrored and rotated copies, are not found; a small distance
between dermoscopy images that only look alike (a round dark lesion on plain skin) is possible,
which is why pairs are listed with their thumbnails for a person to judge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIDE = 32  # the grey image is reduced to SIDE×SIDE before the DCT
BITS = 8  # 8×8 low-frequency coefficients: 64-bit hashes
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 grey, as PIL's convert("L")


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
                block_elements: int = 1 << 22) -> Pairs:
    """Every pair of hashes at most ``max_distance`` bits apart.

    Compares one block of rows with all later rows at a time (XOR, popcount), so memory is
    bounded by ``block_elements`` uint64 whatever the number of hashes.

    Args:
        hashes: (N,) uint64.
        max_distance: largest Hamming distance of a pair, 0–64.
        max_pairs: refuse (:class:`TooManyPairs`) once more pairs than this are found.
        block_elements: hashes compared per step.

    Returns:
        The pairs, each once (``first < second``).
    """
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = len(hashes)
    rows = max(1, block_elements // max(n, 1))
    first, second, distances, found = [], [], [], 0
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        d = distance(hashes[start:stop, None], hashes[None, start:])
        # Only the upper triangle: row i (absolute start + r) against columns j > i.
        d[np.tril_indices(stop - start)] = 255
        r, c = np.nonzero(d <= max_distance)
        found += len(r)
        if found > max_pairs:
            raise TooManyPairs(f"more than {max_pairs} pairs")
        first.append(r + start)
        second.append(c + start)
        distances.append(d[r, c])
    if not first:
        empty = np.zeros(0, dtype=np.int64)
        return Pairs(empty, empty, np.zeros(0, dtype=np.uint8))
    first, second, distances = np.concatenate(first), np.concatenate(second), np.concatenate(distances)
    order = np.lexsort((second, first, distances))
    return Pairs(first[order].astype(np.int64), second[order].astype(np.int64), distances[order].astype(np.uint8))
