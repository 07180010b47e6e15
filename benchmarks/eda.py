"""Near-duplicate search of ``eda.py``: vectorised pHash and blockwise pair search against per-image and per-pair loops.

    python benchmarks/eda.py [--quick] [--images 11720] [--size 288] [--max-distance 4]

Both sides handle ``--images`` images (11 720 by default, ISIC 2018 Task 3: 10 015 + 193 + 1 512):

* hashing ``--images`` squares of ``--size`` px (a pool of ``--pool`` distinct smooth random
  textures, cycled: the cost does not depend on the content), in blocks of 64 as ``eda.py`` reads
  its cache. Naive: one image at a time (grey levels, the same 32×32 box filter,
  ``scipy.fft.dctn``, median, bits packed into a Python int). Vectorised:
  :func:`lesion.eda.hashing.phash` on the block (two matrix products per block);
* the pair search over ``--images`` hashes: random 64-bit hashes (unrelated images hash like
  random bits: the median distance between the 555 real UDA-1 images is 32 of 64) with every 50th
  a copy of an earlier one with 0–4 bits flipped. Naive: a Python loop over all pairs,
  ``(a ^ b).bit_count()``. Vectorised: :func:`lesion.eda.hashing.close_pairs` (XOR + popcount
  of packed uint64, one block of rows against all later ones at a time).

Both sides must give the same hashes and the same pairs (checked, printed); their times and the
ratio are printed. Decoding and the image cache are not timed: ``eda.py`` reads the cache
training built. Timings depend on the machine and its load.
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
    found = set()
    for i, a in enumerate(hashes):
        for j in range(i + 1, len(hashes)):
            if (a ^ hashes[j]).bit_count() <= max_distance:
                found.add((i, j))
    return found


def textures(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct smooth random RGB squares (noise at 1/8 resolution, upsampled)."""
    coarse = rng.integers(0, 256, (n, size // 8 + 1, size // 8 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)[:, :size, :size])


def planted_hashes(n: int, max_distance: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random 64-bit hashes, every 50th a copy of an earlier one with 0–``max_distance`` bits flipped."""
    hashes = rng.integers(0, np.iinfo(np.uint64).max, n, dtype=np.uint64, endpoint=True)
    for k in range(50, n, 50):
        flips = rng.choice(64, int(rng.integers(0, max_distance + 1)), replace=False)
        hashes[k] = hashes[rng.integers(0, k)] ^ np.uint64(sum(1 << int(f) for f in flips))
    return hashes


def timed(run):
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds), for the smoke test")
    parser.add_argument("--images", type=int, default=11720, help="images hashed and hashes paired")
    parser.add_argument("--size", type=int, default=288, help="side of the squares (the cache's: 288 for 224)")
    parser.add_argument("--max-distance", type=int, default=4)
    parser.add_argument("--pool", type=int, default=256, help="distinct squares, cycled (a multiple of 64)")
    args = parser.parse_args()
    if args.quick:
        args.images, args.size, args.pool = 1000, 96, 64
    rng = np.random.default_rng(0)
    pool = textures(args.pool, args.size, rng)
    blocks = [pool[k % args.pool:k % args.pool + min(BLOCK, args.images - k)] for k in range(0, args.images, BLOCK)]

    naive, naive_hash_s = timed(lambda: [naive_hash(image) for block in blocks for image in block])
    fast, fast_hash_s = timed(lambda: np.concatenate([phash(block.astype(np.float32)) for block in blocks]))
    hashes = planted_hashes(args.images, args.max_distance, rng)
    naive_found, naive_pairs_s = timed(lambda: naive_pairs([int(h) for h in hashes], args.max_distance))
    found, fast_pairs_s = timed(lambda: close_pairs(hashes, args.max_distance))

    same_hashes = sum(int(a) == b for a, b in zip(fast.tolist(), naive))
    same_pairs = set(zip(found.first.tolist(), found.second.tolist())) == naive_found
    print(f"{args.images} squares of {args.size} px hashed; {args.images} hashes paired within {args.max_distance} "
          f"bits ({args.images * (args.images - 1) // 2} pairs compared)")
    print(f"   {'':<12}{'hash s':>10}{'pairs s':>10}{'total s':>10}")
    for name, h, p in (("naive", naive_hash_s, naive_pairs_s), ("vectorised", fast_hash_s, fast_pairs_s)):
        print(f"   {name:<12}{h:>10.3f}{p:>10.3f}{h + p:>10.3f}")
    print(f"   identical hashes {same_hashes}/{args.images}; identical pairs: {same_pairs} ({len(naive_found)} pairs)")
    if same_hashes != args.images or not same_pairs:
        raise SystemExit("benchmarks/eda.py: the two sides disagree")
    ratio = (naive_hash_s + naive_pairs_s) / (fast_hash_s + fast_pairs_s)
    print(f"ratio naive/vectorised = {ratio:.2f}× (hash {naive_hash_s / fast_hash_s:.2f}×, "
          f"pairs {naive_pairs_s / fast_pairs_s:.1f}×)")
    print(f"{args.images} images: vectorised hash {fast_hash_s:.2f} s + pair search {fast_pairs_s:.2f} s = "
          f"{fast_hash_s + fast_pairs_s:.2f} s in all")


if __name__ == "__main__":
    main()
