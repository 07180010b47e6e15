"""Memory and time of SMOTE-Tomek: pixels versus pooled embeddings, reduced versus exact search.

    python benchmarks/smote_memory.py [--quick] [--pixel-dtype float64]

1. ISIC 2017 training labels (1372 NV / 254 SK / 374 MEL): plain imblearn ``SMOTETomek`` on
   flattened 224×224×3 images (the original notebooks' approach) versus
   ``lesion.balance.smote.smote_tomek`` with default settings on 2×2048 pooled embeddings. Each run
   is a fresh subprocess; its memory is the child's peak RSS (``ru_maxrss``) minus that of a
   baseline child that imports the same modules and builds the same input, i.e. what resampling
   itself adds. Pixels are float32 by default, like the embeddings (float64, as ``images / 255.``
   in the notebooks, peaks at ~12 GB: ``--pixel-dtype float64``).
2. ISIC 2018 scale (10,015 × 4,096, real class counts, "auto"): ``smote_tomek`` in its default
   reduced-search mode and, unless ``--quick``, in exact mode, in the same run.

Inputs are random but clustered (class-dependent means, anisotropic within-class spread) and
seeded; timings depend on the machine and its load. ``--quick`` shrinks every size (< 1 minute).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
from imblearn.combine import SMOTETomek

from lesion.balance.smote import smote_tomek

ISIC2017 = {"NV": 1372, "SK": 254, "MEL": 374}
ISIC2018 = {"MEL": 1113, "NV": 6705, "BCC": 514, "AKIEC": 327, "BKL": 1099, "DF": 115, "VASC": 142}


def embeddings(counts: list[int], dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative (post-ReLU-like) float32 vectors with class means in a power-law latent space."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts)), counts)
    rank = 256
    scale = (3.0 / (1 + np.arange(rank)) ** 0.7).astype(np.float32)
    means = rng.normal(size=(len(counts), rank)).astype(np.float32) * scale * 0.25
    latent = means[labels] + rng.normal(size=(len(labels), rank)).astype(np.float32) * scale
    features = latent @ (rng.normal(size=(rank, dim)).astype(np.float32) / rank**0.5)
    features += rng.standard_normal(size=features.shape, dtype=np.float32) * 0.05
    return np.maximum(features, 0, out=features), labels


def images(counts: list[int], side: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N×side×side×3): one base image per class plus per-image noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts)), counts)
    bases = rng.integers(40, 216, size=(len(counts), side, side, 3), dtype=np.uint8)
    out = np.empty((len(labels), side, side, 3), dtype=np.uint8)
    for start in range(0, len(labels), 100):  # blocks keep the int16 scratch small
        block = labels[start : start + 100]
        noise = rng.integers(-40, 41, size=(len(block), side, side, 3), dtype=np.int16)
        out[start : start + len(block)] = bases[block] + noise
    return out, labels


def child(spec: dict) -> dict:
    """Build one input, resample it unless it is a baseline run; report peak RSS and time."""
    if spec["space"] == "pixels":
        pixels, labels = images(spec["counts"], spec["side"])
        features = pixels.reshape(len(labels), -1).astype(spec["dtype"])
        del pixels
    else:
        features, labels = embeddings(spec["counts"], spec["dim"])
    seconds = rows = None
    if not spec["baseline"]:
        start = time.perf_counter()
        if spec["space"] == "pixels":
            out, _ = SMOTETomek(random_state=0).fit_resample(features, labels)
        else:
            out, _, _ = smote_tomek(features, labels)
        seconds, rows = time.perf_counter() - start, len(out)
    return {
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "input_mib": features.nbytes / 2**20,
        "dims": features.shape[1],
        "seconds": seconds,
        "rows": rows,
    }


def measure(spec: dict) -> dict:
    """Run ``child(spec)`` in a fresh Python process."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.splitlines()[-1])


def pixels_versus_embeddings(quick: bool, dtype: str) -> None:
    """Part 1: peak memory and time of each space, and the ratios."""
    counts = [n // 4 for n in ISIC2017.values()] if quick else list(ISIC2017.values())
    side = 112 if quick else 224
    names = " / ".join(f"{n} {c}" for c, n in zip(ISIC2017, counts))
    print(f"1. SMOTE-Tomek at ISIC 2017 size ({sum(counts)} images: {names}; 'auto' → "
          f"{len(counts) * max(counts)} rows before Tomek)")
    print("   memory = peak RSS of a fresh child − that of a child that only imports and builds the input")
    print(f"   {'space':<34}{'dims':>8}{'input MiB':>11}{'peak MiB':>10}{'baseline':>10}"
          f"{'memory MiB':>12}{'time s':>9}")
    rows = {}
    for label, spec in (
        (f"pixels {side}×{side}×3 {dtype}, imblearn", {"space": "pixels", "side": side, "dtype": dtype}),
        ("embeddings 2×2048 float32, lesion", {"space": "embeddings", "dim": 4096}),
    ):
        spec["counts"] = counts
        run = measure({**spec, "baseline": False})
        base = measure({**spec, "baseline": True})
        rows[label] = (run["peak_mib"] - base["peak_mib"], run["seconds"])
        print(f"   {label:<34}{run['dims']:>8}{run['input_mib']:>11.0f}{run['peak_mib']:>10.0f}"
              f"{base['peak_mib']:>10.0f}{rows[label][0]:>12.0f}{run['seconds']:>9.1f}")
    (pixel_mem, pixel_s), (embed_mem, embed_s) = rows.values()
    print(f"   pixels / embeddings: memory {pixel_mem / embed_mem:.0f}×, time {pixel_s / embed_s:.0f}×\n")


def reduced_versus_exact(quick: bool) -> None:
    """Part 2: ISIC-2018-scale time of the default reduced search and of the exact one."""
    counts = [n // 4 for n in ISIC2018.values()] if quick else list(ISIC2018.values())
    features, labels = embeddings(counts, 4096)
    print(f"2. ISIC 2018 scale: {len(labels)} × {features.shape[1]} embeddings, 'auto' → "
          f"{len(counts) * max(counts)} rows before Tomek")
    print(f"   {'mode':<10}{'search dims':>12}{'time s':>9}{'rows after Tomek':>18}")
    seconds = {}
    for mode, dims in (("reduced", 128), ("exact", None))[: 1 if quick else 2]:
        _, y, report = smote_tomek(features, labels, search_dims=dims)
        seconds[mode] = report["seconds"]
        print(f"   {report['mode']:<10}{dims or features.shape[1]:>12}{report['seconds']:>9.1f}{len(y):>18}")
    if "exact" in seconds:
        print(f"   exact / reduced time: {seconds['exact'] / seconds['reduced']:.1f}×")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, reduced mode only (< 1 minute)")
    parser.add_argument("--pixel-dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    pixels_versus_embeddings(args.quick, args.pixel_dtype)
    reduced_versus_exact(args.quick)


if __name__ == "__main__":
    main()
