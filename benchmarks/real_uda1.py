"""Both heads trained from scratch on real images: the UDA-1 split in ``../shared`` (ISIC 2017 layout, nevus vs melanoma).

    python benchmarks/real_uda1.py [--quick] [--seeds 42 1 2] [--models baseline barata] [--epochs 15]
                                   [--size 128] [--data DIR] [--extra OVERRIDE …] [--ensemble]

For every model and seed, trains ``train.py dataset=isic2017`` on the 366 training images
(ResNet-18 from random weights, ``--size`` px, ``--epochs`` epochs, class-weighted loss, checkpoint
chosen on the 50 validation images) and reads the test metrics of its best checkpoint on the 139
test images, and of its last epoch's. Prints per run and as mean ± sd per model: MEL AUC and BACC
(over the two classes present; SK has no image) of the best checkpoint, with the epoch it is, and
the last epoch's MEL AUC (what selection on 50 validation images changes).

``--extra`` adds overrides to every run (e.g. ``callbacks=ema dataset.color_constancy=shades_of_gray``);
``--ensemble`` then evaluates each model's seeds as one ensemble (mean of the members'
probabilities, each with the 8 flips and 4 crops).

The floor, printed first: a logistic regression (class-balanced) on 16-bin colour histograms
of the cached 128 px squares, the same splits.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from lesion.data.cache import SquareImages
from lesion.data.readers import read_split

REPO = Path(__file__).resolve().parents[1]
UDA1 = REPO.parent / "shared" / "data" / "isic2017-uda1"


def histograms(root: Path, split: str, bins: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the normalised histogram of each RGB channel of its 128 px square; and its labels."""
    table = read_split("isic2017", root, split)
    squares = SquareImages(table, 128, None, 2 * 89_478_485)
    rows = [np.concatenate([np.histogram(squares[i][..., c], bins=bins, range=(0, 256))[0] for c in range(3)])
            for i in range(len(table))]
    return np.asarray(rows, dtype=np.float64) / (128 * 128), table.labels


def colour_floor(root: Path) -> float:
    """MEL AUC on the test split of a logistic regression on colour histograms."""
    (x_train, y_train), (x_test, y_test) = histograms(root, "train"), histograms(root, "test")
    mel = 2  # ISIC 2017 classes: NV, SK, MEL
    scaler = StandardScaler().fit(x_train)
    model = LogisticRegression(class_weight="balanced", max_iter=2000).fit(scaler.transform(x_train), y_train == mel)
    return float(roc_auc_score(y_test == mel, model.predict_proba(scaler.transform(x_test))[:, 1]))


def run_script(script: str, overrides: list[str], cwd: Path, what: str) -> None:
    """Run ``train.py`` or ``evaluate.py`` with ``overrides``; exit with its error output if it fails."""
    done = subprocess.run([sys.executable, str(REPO / script), *overrides], cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{script} {what} failed:\n{done.stderr[-4000:]}")


def train(root: Path, model: str, seed: int, args: argparse.Namespace, folder: Path) -> dict:
    """Train one run; return the test metrics of its best checkpoint, with the epoch chosen and those of its last."""
    run_dir = folder / f"{model}-{seed}"
    run_script("train.py", [
        "dataset=isic2017", f"dataset.root={root}", f"model={model}", "model.backbone=resnet18", "model.weights=none",
        f"dataset.image_size={args.size}", "balance=class_weight", "trainer=cpu", f"trainer.max_epochs={args.epochs}",
        "patience=null", f"seed={seed}", "logger=csv", *args.extra, f"hydra.run.dir={run_dir}",
    ], folder, f"of {model} seed {seed}")
    last = run_dir / "last-epoch"
    run_script("evaluate.py", [f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}", "split=test", f"out={last}",
                               "gradcam.n=0", "plots=false", "bootstrap=10"],
               folder, f"of the last epoch of {model} seed {seed}")
    metrics = json.loads((run_dir / "test_metrics.json").read_text())
    metrics["epoch"] = json.loads((run_dir / "val_metrics.json").read_text())["epoch"]
    metrics["last"] = json.loads((last / "metrics.json").read_text())
    return metrics


def ensemble(runs: list[Path], out: Path) -> dict:
    """Test metrics of the runs' best checkpoints as one ensemble (mean), each with flips and 4 crops."""
    members = ",".join(str(run / "checkpoints" / "best.ckpt") for run in runs)
    run_script("evaluate.py", [f"ckpt=[{members}]", "split=test", f"out={out}", "tta.flips=true", "tta.crops=4",
                               "gradcam.n=0", "plots=false", "bootstrap=10"], out.parent, "of the ensemble")
    return json.loads((out / "metrics.json").read_text())


def report(model: str, name: str, values: list[float]) -> None:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    print(f"  {model:8s} {name} {statistics.mean(values):.3f} ± {spread:.3f} over {len(values)} seed(s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 2 epochs at 32 px (a smoke run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--models", nargs="+", default=["baseline", "barata"])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--data", type=Path, default=UDA1)
    parser.add_argument("--extra", nargs="*", default=[], metavar="OVERRIDE")
    parser.add_argument("--ensemble", action="store_true",
                        help="also evaluate each model's seeds as one ensemble, with flips and 4 crops")
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"real images not found at {args.data} (the shared data folder is absent)")
    if args.quick:
        args.seeds, args.epochs, args.size = args.seeds[:1], 2, 32
    print(f"UDA-1 (366 train / 50 val / 139 test), ResNet-18 from scratch, {args.size} px, {args.epochs} epochs, "
          f"class-weighted CE{' + ' + ' '.join(args.extra) if args.extra else ''}")
    print(f"  colour-histogram logistic regression: MEL AUC {colour_floor(args.data):.3f}")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            results = [(seed, train(args.data, model, seed, args, Path(tmp))) for seed in args.seeds]
            for seed, m in results:
                print(f"  {model:8s} seed {seed:>3}: MEL AUC {m['auc/MEL']:.3f}, BACC {m['bacc']:.3f} "
                      f"(best.ckpt, epoch {m['epoch']}); last epoch: MEL AUC {m['last']['auc/MEL']:.3f}, "
                      f"BACC {m['last']['bacc']:.3f}")
            report(model, "MEL AUC", [m["auc/MEL"] for _, m in results])
            report(model, "BACC", [m["bacc"] for _, m in results])
            report(model, "last-epoch MEL AUC", [m["last"]["auc/MEL"] for _, m in results])
            if args.ensemble:
                runs = [Path(tmp) / f"{model}-{seed}" for seed in args.seeds]
                found = ensemble(runs, Path(tmp) / f"{model}-ensemble")
                print(f"  {model:8s} ensemble of seeds {' '.join(map(str, args.seeds))} (flips + 4 crops): "
                      f"MEL AUC {found['auc/MEL']:.3f}, BACC {found['bacc']:.3f}")


if __name__ == "__main__":
    main()
