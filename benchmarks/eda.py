"""Near-duplicate search of ``eda.py``: vectorised pHash and blockwise pair search against per-image and per-pair loops.

    python benchmarks/eda.py [--quick] [--images 11720] [--subset 400] [--size 288] [--max-distance 4]

Part 1, the same ``--subset`` images both ways (random-texture squares of ``--size`` px):

* naive: one image at a time (grey levels, the same 32×32 box filter, ``scipy.fft.dctn``, median,
  bits packed into a Python int), then every pair in a Python loop (``(a ^ b).bit_count()``);
* vectorised: :func:`lesion.eda.hashing.phash` over blocks of 64 images (two matrix products per
  block) and :func:`lesion.eda.hashing.close_pairs` (XOR + popcount of packed uint64, blockwise).

Both must give the same hashes and the same pairs (checked, printed); the ratio of their times is
printed. Part 2 times the vectorised side at ISIC 2018 scale (``--images``, 11 720 by default:
10 015 + 193 + 1 512): hashing that many squares (a pool of distinct squares cycled: the cost does
not depend on the content) and the pair search over as many random 64-bit hashes (unrelated
images hash like random bits: the median distance of the 555 real UDA-1 images is 32 of 64).
Decoding and the image cache are not timed: ``eda.py`` reads the cache built for training.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.fft

from lesion.eda.hashing import BITS, LUMA, box_filter, close_pairs, phash

BLOCK = 64  # images per phash call, as lesion.eda.run.scan


def naive_hash(image: np.ndarray) -> int:
    """The pHash of one H×W×3 square, one step at a time."""
    grey = image.astype(np.float64) @ LUMA
    box = box_filter(image.shape[0])
    coefficients = scipy.fft.dctn(box @ grey @ box.T, norm="ortho")[1:BITS + 1, 1:BITS + 1].ravel()
    value = 0
    for bit in coefficients > np.median(coefficients):
        value = (value << 1) | int(bit)
    return value


def naive_pairs(hashes: list[int], max_distance: int) -> set[tuple[int, int]]:
    """Every pair i < j within ``max_distance`` bits, by a loop over all pairs."""
    return {(i, j) for i in range(len(hashes)) for j in range(i + 1, len(hashes))
            if (hashes[i] ^ hashes[j]).bit_count() <= max_distance}


def textures(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct smooth random RGB squares (noise at 1/8 resolution, upsampled), every fifth
    one a copy of the one before with its brightness raised by 3 (a near-duplicate pair)."""
    coarse = rng.integers(0, 256, (n, size // 8 + 1, size // 8 + 1, 3), dtype=np.uint8)
    images = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)[:, :size, :size]
    images[4::5] = np.clip(images[3::5][:len(images[4::5])].astype(np.int16) + 3, 0, 255)
    return np.ascontiguousarray(images)


def vectorised_hash(images: np.ndarray) -> np.ndarray:
    return np.concatenate([phash(images[k:k + BLOCK].astype(np.float32)) for k in range(0, len(images), BLOCK)])


def timed(run):
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds), for the smoke test")
    parser.add_argument("--images", type=int, default=11720, help="images of the at-scale timing")
    parser.add_argument("--subset", type=int, default=400, help="images hashed and paired both ways")
    parser.add_argument("--size", type=int, default=288, help="side of the squares (the cache's, 288 for 224)")
    parser.add_argument("--max-distance", type=int, default=4)
    parser.add_argument("--pool", type=int, default=256, help="distinct squares cycled in the at-scale hashing "
                        "(a multiple of 64)")
    args = parser.parse_args()
    if args.quick:
        args.images, args.subset, args.size, args.pool = 2000, 120, 96, 64
    rng = np.random.default_rng(0)

    subset = textures(args.subset, args.size, rng)
    naive, naive_hash_s = timed(lambda: [naive_hash(image) for image in subset])
    naive_found, naive_pairs_s = timed(lambda: naive_pairs(naive, args.max_distance))
    fast, fast_hash_s = timed(lambda: vectorised_hash(subset))
    found, fast_pairs_s = timed(lambda: close_pairs(fast, args.max_distance))
    same_hashes = sum(int(a) == b for a, b in zip(fast.tolist(), naive))
    same_pairs = set(zip(found.first.tolist(), found.second.tolist())) == naive_found
    print(f"Part 1: {args.subset} squares of {args.size} px, pairs within {args.max_distance} bits")
    print(f"   {'':<12}{'hash s':>10}{'pairs s':>10}{'total s':>10}")
    for name, h, p in (("naive", naive_hash_s, naive_pairs_s), ("vectorised", fast_hash_s, fast_pairs_s)):
        print(f"   {name:<12}{h:>10.3f}{p:>10.4f}{h + p:>10.3f}")
    print(f"   identical hashes {same_hashes}/{args.subset}, identical pairs: {same_pairs} ({len(naive_found)} pairs)")
    if same_hashes != args.subset or not same_pairs:
        raise SystemExit("benchmarks/eda.py: the two sides disagree")
    ratio = (naive_hash_s + naive_pairs_s) / (fast_hash_s + fast_pairs_s)
    print(f"ratio naive/vectorised = {ratio:.1f}× (hash {naive_hash_s / fast_hash_s:.1f}×, "
          f"pairs {naive_pairs_s / fast_pairs_s:.1f}×)")

    pool = textures(args.pool, args.size, rng)
    blocks = [(k % args.pool, min(BLOCK, args.images - k)) for k in range(0, args.images, BLOCK)]
    _, hash_s = timed(lambda: [phash(pool[start:start + n].astype(np.float32)) for start, n in blocks])
    hashes = rng.integers(0, np.iinfo(np.uint64).max, args.images, dtype=np.uint64, endpoint=True)
    pairs, pairs_s = timed(lambda: close_pairs(hashes, args.max_distance))
    print(f"\nPart 2: vectorised side at scale ({args.size} px squares, random hashes for the pairs)")
    print(f"{args.images} images: hashing {hash_s:.2f} s, pair search {pairs_s:.2f} s "
          f"({args.images * (args.images - 1) // 2} pairs compared, {len(pairs)} within {args.max_distance} bits), "
          f"{hash_s + pairs_s:.2f} s in all")


if __name__ == "__main__":
    main()
