"""Every stage before training at growing ISIC 2024 sizes: time, peak memory, growth exponent, 401,059 projected.

    python benchmarks/scale.py [--sizes 10000,20000,40000] [--stages read,cache,...] [--work DIR] [--workers 2]

For each size ``n`` a synthetic set in the ISIC 2024 layout (``train-image.hdf5`` + ``train-metadata.csv``,
``n`` training images, 100–150 px squares, 10 % malignant, patients of ~8 images; ``lesion.data.synthetic``)
is generated under ``--work`` or reused from an earlier run (not a measured stage; its time is
printed). Then every stage runs in a fresh subprocess of its own; the subprocess prepares its
input untimed, then times the stage's work:

* ``read``: the training CSV and the HDF5 index (``read_split``) and the patient of every image
  (``read_groups``), as the DataModule reads them;
* ``cache``: the image cache built from the HDF5 file at the side ``conf/dataset/isic2024.yaml``
  gives (``SquareImages.build``, ``--workers`` processes); its size on disk is printed;
* ``splits``: the patient-grouped test hold-out (``test_fraction`` 0.15), validation hold-out
  (0.15) and 5 folds of the rest, as the DataModule makes them;
* ``smote``: SMOTE-Tomek (``lesion.balance.smote``, default ``search_dims``) on ``n`` random
  clustered 2048-d embeddings with the set's labels;
* ``hash``: the EDA's pHash of every cached square (``lesion.eda.run.scan``);
* ``search``: the near-duplicate pair search over those hashes (``close_pairs``, 4 bits: the EDA's
  default);
* ``pairs``: the EDA's whole near-duplicate step (``find_duplicates``): the search, then a record
  per pair found, so its time also follows the number of pairs (up to its limit of 10⁶);
* ``evaluate``: ``evaluation_report`` of ``n`` two-class predictions, 1000 bootstrap resamples
  (BACC, AUC and pAUC intervals).

Memory is the peak resident set of the stage's process and the processes it started
(``ru_maxrss`` from ``os.wait4``), minus that of a process that only imports the same modules
(printed as the base): what the stage adds, its input included, and for the stages that read the
cache through its memmap the cache pages they touched (file-backed, shared, reclaimable). Time is
wall-clock and CPU (all threads and worker processes) of the stage's work alone. For each stage the
least-squares log-log slope over the sizes (the growth exponent: 1 is linear, n·log n reads about
1.1) and that power law at 401,059 images are printed, with ratios against the smallest size.
CPU time is steadier than wall time on a loaded machine; both depend on the machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ISIC2024_IMAGES = 401_059
STAGES = ("read", "cache", "splits", "smote", "hash", "search", "pairs", "evaluate")
LAYOUT = "isic2024"
SEED = 0
HOLDOUT = 0.15  # test_fraction and val_fraction of conf/dataset/isic2024.yaml
FOLDS = 5
EMBEDDING_DIM = 2048
MAX_DISTANCE = 4  # conf/eda.yaml's duplicates.max_distance
N_BOOTSTRAP = 1000
IMPORTS = ("lesion.balance.smote", "lesion.data.cache", "lesion.eda.run", "lesion.evaluate.report")


def cache_side() -> int:
    """Side of the cached squares that ``dataset=isic2024`` asks for."""
    from hydra import compose, initialize_config_dir

    from lesion.configs import config_dir
    from lesion.data.cache import square_size

    with initialize_config_dir(str(config_dir()), version_base=None):
        dataset = compose("eda", overrides=["dataset=isic2024"]).dataset
    return square_size(dataset.image_size, dataset.cache_size)


# --- the stages (run in the child process) -------------------------------------------------------------------------


def _table(root: Path):
    from lesion.data.readers import read_split

    return read_split(LAYOUT, root, "train")


def _squares(root: Path, args: argparse.Namespace):
    from lesion.data.cache import SquareImages
    from lesion.data.images import DEFAULT_MAX_PIXELS

    return SquareImages(_table(root), args.side, args.work / "images", DEFAULT_MAX_PIXELS)


def _hashes(root: Path, args: argparse.Namespace) -> tuple[np.ndarray, object]:
    from lesion.eda.run import scan

    images = _squares(root, args)
    images.build(args.workers)
    return scan(images, "hashing")[0], images.table


def _embeddings(labels: np.ndarray, dim: int, seed: int = SEED) -> np.ndarray:
    """Non-negative float32 vectors (post-ReLU-like) with class means in a power-law latent space."""
    rng = np.random.default_rng(seed)
    rank = 256
    scale = (3.0 / (1 + np.arange(rank)) ** 0.7).astype(np.float32)
    means = rng.normal(size=(labels.max() + 1, rank)).astype(np.float32) * scale * 0.25
    latent = means[labels] + rng.normal(size=(len(labels), rank)).astype(np.float32) * scale
    features = latent @ (rng.normal(size=(rank, dim)).astype(np.float32) / rank**0.5)
    return np.maximum(features, 0, out=features)


def _predictions(labels: np.ndarray, seed: int = SEED) -> np.ndarray:
    """N×2 probabilities that rank a malignant image above a benign one about 80 % of the time."""
    logit = 1.2 * labels + np.random.default_rng(seed).normal(size=len(labels)) - 2
    positive = 1 / (1 + np.exp(-logit))
    return np.stack([1 - positive, positive], axis=1)


def prepare(stage: str, root: Path, args: argparse.Namespace):
    """The stage's input, built untimed; returns the timed work as a function of no arguments."""
    from lesion.data.readers import read_groups

    if stage == "read":
        def read() -> None:
            table = _table(root)
            read_groups(LAYOUT, root, table.ids)

        return read
    if stage == "cache":
        images = _squares(root, args)
        shutil.rmtree(args.work / "images", ignore_errors=True)  # built from nothing, every time
        return lambda: images.build(args.workers)
    if stage == "splits":
        from lesion.data.splits import grouped_folds, split_indices

        table = _table(root)
        labels, groups = table.labels, read_groups(LAYOUT, root, table.ids)

        def split() -> None:
            rest, _ = split_indices(labels, SEED, HOLDOUT, None, groups, "dataset.test_fraction")
            split_indices(labels[rest], SEED, HOLDOUT, None, groups[rest])
            grouped_folds(labels[rest], groups[rest], FOLDS, SEED)

        return split
    if stage == "smote":
        from lesion.balance.smote import smote_tomek

        labels = _table(root).labels
        features = _embeddings(labels, EMBEDDING_DIM)
        return lambda: smote_tomek(features, labels, seed=SEED)
    if stage == "hash":
        from lesion.eda.run import scan

        images = _squares(root, args)
        images.build(args.workers)
        return lambda: scan(images, "hashing")
    if stage == "search":
        from lesion.eda.hashing import close_pairs

        hashes, _ = _hashes(root, args)
        return lambda: close_pairs(hashes, MAX_DISTANCE)
    if stage == "pairs":
        from lesion.eda.duplicates import find_duplicates

        hashes, table = _hashes(root, args)
        names = [table.layout.classes[k] for k in table.labels]
        return lambda: find_duplicates({"train": hashes}, {"train": table.ids}, {"train": names}, MAX_DISTANCE)
    if stage == "evaluate":
        from lesion.evaluate.report import evaluation_report

        table = _table(root)
        probs = _predictions(table.labels)
        return lambda: evaluation_report(probs, table.labels, list(table.layout.classes), N_BOOTSTRAP, SEED)
    raise ValueError(stage)


def _cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of the processes it has waited for."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def child(args: argparse.Namespace) -> None:
    """Run one stage (or, for ``base``, only the imports) and print its time and facts as JSON."""
    for module in IMPORTS:  # every stage's, so that the base holds them all
        importlib.import_module(module)

    facts = {}
    if args.child != "base":
        work = prepare(args.child, args.root, args)
        start, cpu = time.perf_counter(), _cpu_seconds()
        result = work()
        facts["seconds"], facts["cpu_seconds"] = time.perf_counter() - start, _cpu_seconds() - cpu
        if args.child == "cache":
            facts["disk_bytes"] = sum(f.stat().st_size for f in (args.work / "images").rglob("*") if f.is_file())
        if args.child in ("search", "pairs"):
            facts["pairs"] = len(result.pairs if args.child == "pairs" else result)
    print(json.dumps(facts))


# --- the parent: generate, run each stage in a subprocess, print the tables ----------------------------------------


def run_child(stage: str, root: Path | None, args: argparse.Namespace) -> dict:
    """Run ``stage`` in a fresh process; its JSON facts plus ``peak_mib`` (peak RSS of it and its children)."""
    command = [sys.executable, __file__, "--child", stage, "--work", str(args.work), "--workers", str(args.workers),
               "--side", str(args.side)]
    if root is not None:
        command += ["--root", str(root)]
    with tempfile.TemporaryFile("w+") as errors:  # a file, not a pipe: progress bars never block the child
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True, stdin=subprocess.DEVNULL)
        out = process.stdout.read()
        # wait4 gives this child's own rusage: its peak RSS, or that of a child of its own if larger.
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            errors.seek(0)
            sys.exit(f"stage {stage} failed (exit {process.returncode}):\n{errors.read()[-4000:]}")
    return {**json.loads(out.strip().splitlines()[-1]), "peak_mib": usage.ru_maxrss / 1024}


def generate(n: int, args: argparse.Namespace) -> Path:
    """The synthetic ISIC 2024 set of ``n`` training images under ``--work`` (written unless there already)."""
    from lesion.data.synthetic import ensure_synthetic

    root = args.work / f"{LAYOUT}-n{n}-s{SEED}"
    made = not root.is_dir()
    start = time.perf_counter()
    ensure_synthetic(LAYOUT, root, n, SEED)
    print(f"n={n}: synthetic set {'generated' if made else 'reused'} in {time.perf_counter() - start:.1f} s ({root})",
          flush=True)
    return root


def exponent(sizes: list[int], values: list[float]) -> float:
    """Least-squares slope of log(value) on log(n): the growth exponent (NaN unless every value is positive)."""
    if len(sizes) < 2 or min(values) <= 0:
        return math.nan
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def projected(sizes: list[int], values: list[float]) -> float:
    """The least-squares power law through ``values`` at 401,059 images."""
    if len(sizes) < 2 or min(values) <= 0:
        return math.nan
    slope, intercept = np.polyfit(np.log(sizes), np.log(values), 1)
    return float(math.exp(intercept + slope * math.log(ISIC2024_IMAGES)))


def nlogn(n: int) -> float:
    return n * math.log(n)


def report(sizes: list[int], results: dict[int, dict[str, dict]], base_mib: float, stages: list[str]) -> None:
    """One table per size, then the growth exponents and the projection to 401,059 images."""
    smallest = sizes[0]
    for n in sizes:
        print(f"\nn = {n} (×{n / smallest:g} of n = {smallest}; n·log n ×{nlogn(n) / nlogn(smallest):.2f})")
        print(f"  {'stage':<10}{'wall s':>9}{'×':>7}{'CPU s':>9}{'×':>7}{'peak MiB':>10}{'added MiB':>11}{'×':>7}  notes")
        for stage in stages:
            r, r0 = results[n][stage], results[smallest][stage]
            added, added0 = r["peak_mib"] - base_mib, r0["peak_mib"] - base_mib
            notes = []
            if "disk_bytes" in r:
                notes.append(f"cache {r['disk_bytes'] / 2**20:.0f} MiB on disk")
            if "pairs" in r:
                notes.append(f"{r['pairs']} pairs")
            print(f"  {stage:<10}{r['seconds']:>9.2f}{r['seconds'] / r0['seconds']:>7.2f}{r['cpu_seconds']:>9.2f}"
                  f"{r['cpu_seconds'] / r0['cpu_seconds']:>7.2f}{r['peak_mib']:>10.0f}{added:>11.0f}"
                  f"{added / added0 if added0 > 0 else math.nan:>7.2f}  {', '.join(notes)}")
    print(f"\nGrowth exponents (least-squares log-log slope over n = {', '.join(map(str, sizes))}; n·log n reads "
          f"{exponent(sizes, [nlogn(n) for n in sizes]):.2f}) and the fit at {ISIC2024_IMAGES:,} images "
          f"(base process {base_mib:.0f} MiB, not included):")
    print(f"  {'stage':<10}{'wall exp':>9}{'CPU exp':>9}{'wall s':>9}{'CPU s':>9}{'memory exp':>12}{'added MiB':>11}")
    totals = [0.0, 0.0]
    for stage in stages:
        wall, cpu = ([results[n][stage][key] for n in sizes] for key in ("seconds", "cpu_seconds"))
        memory = [results[n][stage]["peak_mib"] - base_mib for n in sizes]
        seconds = [projected(sizes, wall), projected(sizes, cpu)]
        totals = [t + s for t, s in zip(totals, seconds)]
        last = results[sizes[-1]][stage]
        extra = ""
        if "disk_bytes" in last:
            extra = f"  cache on disk {last['disk_bytes'] * ISIC2024_IMAGES / sizes[-1] / 2**30:.1f} GiB"
        print(f"  {stage:<10}{exponent(sizes, wall):>9.2f}{exponent(sizes, cpu):>9.2f}{seconds[0]:>9.0f}"
              f"{seconds[1]:>9.0f}{exponent(sizes, memory):>12.2f}{projected(sizes, memory):>11.0f}{extra}")
    print(f"  {'all':<10}{'':>18}{totals[0]:>9.0f}{totals[1]:>9.0f}  ({totals[0] / 3600:.2f} h wall)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,20000,40000", help="training images per set, comma-separated")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {','.join(STAGES)}")
    parser.add_argument("--work", type=Path,
                        default=Path(os.environ.get("LESION_CACHE", "~/.cache/lesion")).expanduser() / "scale",
                        help="folder of the generated sets and the image cache (kept for the next run)")
    parser.add_argument("--workers", type=int, default=2, help="image-cache build processes")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--side", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    sizes = sorted(int(s) for s in args.sizes.split(","))
    stages = [s for s in args.stages.split(",") if s]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or len(sizes) < 1:
        parser.error(f"unknown stage(s) {unknown}; use {','.join(STAGES)}")
    args.work = args.work.expanduser().absolute()
    args.side = cache_side()
    print(f"cache side {args.side} px (dataset=isic2024), {args.workers} cache workers, {os.cpu_count()} cores")
    base_mib = run_child("base", None, args)["peak_mib"]
    results = {}
    for n in sizes:
        root = generate(n, args)
        results[n] = {}
        for stage in stages:
            results[n][stage] = run_child(stage, root, args)
            print(f"  {stage}: {results[n][stage]['seconds']:.2f} s, peak {results[n][stage]['peak_mib']:.0f} MiB",
                  flush=True)
    report(sizes, results, base_mib, stages)


if __name__ == "__main__":
    main()
