"""Stacking against its parts, on synthetic ISIC 2024 where pixels and table each carry part of the signal.

    python benchmarks/stacking.py [--quick] [--seeds 1 2 3] [--n 600] [--folds 3] [--epochs 8]

Writes a synthetic ISIC 2024 set (``--n`` training crops, 10 % malignant) in which a malignant crop
is drawn as malignant with probability 0.7 and, independently, has a malignant lesion's
measurements (size, border, colour, contrast) with probability 0.7 (:mod:`lesion.data.synthetic`):
neither the image nor the table alone shows every malignant crop. For every seed it trains a
K-fold sweep of image models (``model=baseline``, ResNet-18 from random weights, 32 px, learning
rate 1e-3) through ``train.py -m 'dataset.fold=1/K,…,K/K'``, then runs ``stack.py`` on the sweep
twice: with every feature (stacked) and without the image scores (tabular-only,
``features.image=false``); the image models' own out-of-fold scores are the image-only figure.
Prints each seed's out-of-fold pAUC above 80 % TPR over the training crops (the test hold-out is
a seventh of them: too few malignant crops to rank anything), the mean ± sd of each over the
seeds, and the ratio of the stacked mean to the better of the other two.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from lesion.data.synthetic import write_synthetic

REPO = Path(__file__).resolve().parents[1]
KINDS = ("image-only", "tabular-only", "stacked")


def _run(command: list[str], cwd: str, env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, *command], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{' '.join(command[:2])} failed:\n{done.stderr[-4000:]}")


def _oof_pauc(out: Path, which: str) -> float:
    return json.loads((out / "metrics.json").read_text())["oof"][which]["pauc80"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 160 crops, 2 folds, 1 epoch (a smoke run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.n, args.folds, args.epochs = args.seeds[:1], 160, 2, 1
    results: dict[str, list[float]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "LESION_CACHE": str(Path(tmp) / "cache")}
        root = write_synthetic("isic2024", Path(tmp) / "data", n=args.n, seed=0)
        folds = ",".join(f"{k}/{args.folds}" for k in range(1, args.folds + 1))
        for seed in args.seeds:
            sweep, runs = Path(tmp) / f"sweep{seed}", Path(tmp) / f"stack{seed}"
            _run([str(REPO / "train.py"), "-m", f"dataset.fold={folds}", f"seed={seed}", "dataset=isic2024",
                  f"dataset.root={root}", "model=baseline", "model.backbone=resnet18", "model.weights=none",
                  "dataset.image_size=32", "dataset.batch_size=16", "dataset.num_workers=0", "optimizer.lr=0.001",
                  "trainer=cpu", f"trainer.max_epochs={args.epochs}", "patience=null", "logger=csv",
                  f"hydra.sweep.dir={sweep}"], tmp, env)
            for name, features in (("stacked", []), ("tabular-only", ["features.image=false"])):
                _run([str(REPO / "stack.py"), f"sweep={sweep}", "num_workers=0", *features, f"out={runs / name}"],
                     tmp, env)
            figures = {"image-only": _oof_pauc(runs / "stacked", "image"),
                       "tabular-only": _oof_pauc(runs / "tabular-only", "stacked"),
                       "stacked": _oof_pauc(runs / "stacked", "stacked")}
            print(f"  seed {seed}: " + ", ".join(f"{kind} {figures[kind]:.4f}" for kind in KINDS)
                  + " (out-of-fold pAUC80)", flush=True)
            for kind in KINDS:
                results[kind].append(figures[kind])
    print(f"synthetic ISIC 2024, {args.n} training crops (10 % malignant, shown by the pixels for 70 % of them and "
          f"by the measurements for 70 %, independently); {args.folds} folds of ResNet-18 from scratch, 32 px, "
          f"{args.epochs} epochs; lightgbm on 3 tree seeds (stack.py defaults); pAUC80 ranges over [0, 0.2]")
    means = {}
    for kind in KINDS:
        means[kind] = statistics.mean(results[kind])
        spread = statistics.stdev(results[kind]) if len(results[kind]) > 1 else 0.0
        print(f"  {kind:12s} out-of-fold pAUC80 {means[kind]:.4f} ± {spread:.4f} over {len(results[kind])} seed(s)")
    best = max(means["image-only"], means["tabular-only"])
    ratio = means["stacked"] / best if best else float("nan")
    print(f"ratio stacked/best single = {ratio:.2f}× (mean out-of-fold pAUC80)")


if __name__ == "__main__":
    main()
