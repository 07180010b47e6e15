"""Patient-metadata fusion against the image-only model, on synthetic data where the metadata carries signal.

    python benchmarks/metadata_fusion.py [--quick] [--seeds 1 2 3] [--signal 0.6] [--n 400] [--epochs 15]

Writes a synthetic HAM10000 (``--n`` training images, 7 classes at the real imbalance) in which
a share ``--signal`` of the images have their class's own anatomic site
(``lesion.data.synthetic.write_synthetic(metadata_signal=…)``); the rest of the metadata and
the images are drawn as usual. Then trains ``model=baseline`` (ResNet-18 from random weights,
32 px, learning rate 1e-3, class-weighted loss) with ``model.metadata=false`` and ``true`` for every seed, through
``train.py`` itself, and prints each run's validation and test BACC, their mean ± sd per model and
the ratio of the mean test BACCs (fused / image-only). The split is lesion-grouped and the
same for both models at a seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from lesion.data.synthetic import write_synthetic

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 120 images, 2 epochs (a smoke run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--signal", type=float, default=0.6)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.n, args.epochs = args.seeds[:1], 120, 2
    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic("ham10000", Path(tmp) / "data", n=args.n, seed=0, metadata_signal=args.signal)
        sweep = Path(tmp) / "sweep"
        done = subprocess.run([
            sys.executable, str(REPO / "train.py"), "-m", f"seed={','.join(map(str, args.seeds))}",
            "model.metadata=false,true", "dataset=ham10000", f"dataset.root={root}", "model=baseline",
            "model.backbone=resnet18", "model.weights=none", "dataset.image_size=32", "dataset.batch_size=16",
            "dataset.num_workers=0", "optimizer.lr=0.001", "loss.weight=inverse_frequency", "trainer=cpu", f"trainer.max_epochs={args.epochs}",
            "patience=null", "logger=csv", f"hydra.sweep.dir={sweep}",
        ], cwd=tmp, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"train.py failed:\n{done.stderr[-4000:]}")
        results: dict[bool, list[tuple[int, float, float]]] = {False: [], True: []}
        for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
            if (job / "error.txt").is_file():
                sys.exit(f"{job.name} failed: {(job / 'error.txt').read_text()[-2000:]}")
            overrides = (job / ".hydra" / "overrides.yaml").read_text()
            fused = "model.metadata=true" in overrides.lower()
            seed = int(next(line.split("=")[1] for line in overrides.splitlines() if "seed=" in line))
            val = json.loads((job / "val_metrics.json").read_text())["bacc"]
            test = json.loads((job / "test_metrics.json").read_text())["bacc"]
            results[fused].append((seed, val, test))
    print(f"synthetic HAM10000, {args.n} training images, site tied to the class for {args.signal:.0%} of them; "
          f"ResNet-18 from scratch, 32 px, {args.epochs} epochs")
    means = {}
    for fused, runs in results.items():
        name = "fused (model.metadata=true)" if fused else "image-only"
        for seed, val, test in sorted(runs):
            print(f"  {name:28s} seed {seed}: val BACC {val:.4f}, test BACC {test:.4f}")
        tests = [t for *_, t in runs]
        means[fused] = statistics.mean(tests)
        spread = statistics.stdev(tests) if len(tests) > 1 else 0.0
        print(f"  {name:28s} test BACC {means[fused]:.4f} ± {spread:.4f} over {len(tests)} seed(s)")
    print(f"ratio fused/image-only = {means[True] / means[False]:.2f}× (mean test BACC)")


if __name__ == "__main__":
    main()
