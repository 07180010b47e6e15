"""Out-of-distribution scores, energy against maximum softmax probability, with held-out lesion types as the unknown.

    python benchmarks/ood.py [--quick] [--seeds 1 2 3] [--n 800] [--per-class 80] [--epochs 15]

Writes a synthetic ISIC 2018 set (``--n`` training images, :mod:`lesion.data.synthetic`) and
splits its lesion types: the images of MEL, NV, BCC and BKL (at most ``--per-class`` of each)
become a ``dataset=folder`` dataset, known to the model; every image of AKIEC, DF and VASC is
out-of-distribution. For each seed it trains ``model=baseline`` (ResNet-18 from random weights,
32 px, learning rate 1e-3) on the known types through ``train.py``, then predicts the known
types' test hold-out (in-distribution) and the held-out types (out-of-distribution) as
``evaluate.py`` does (:func:`lesion.evaluate.predict.predict_with_energy`, plain view). Both scores
come from the same logits: energy ``−logsumexp(logits)`` and MSP ``1 − max softmax``. Prints each seed's
detection AUROC and FPR at 95 % TPR (:func:`lesion.evaluate.ood.detection_report`), their
mean ± sd over the seeds and the ratio of the mean AUROCs (energy / MSP).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from torch.utils.data import DataLoader

from lesion.data.synthetic import LESIONS_CSV, write_synthetic
from lesion.evaluate.folder import folder_images
from lesion.evaluate.ood import detection_report, msp_score
from lesion.evaluate.predict import predict_with_energy, prediction_items
from lesion.evaluate.rebuilt import checkpoint_datamodule
from lesion.train.module import LesionClassifier

REPO = Path(__file__).resolve().parents[1]
KNOWN, UNKNOWN = ("MEL", "NV", "BCC", "BKL"), ("AKIEC", "DF", "VASC")
# Each score from the probabilities and the energies of one prediction.
SCORES = {"energy": lambda probs, energies: energies, "MSP": lambda probs, energies: msp_score(probs)}


def split_types(data: Path, known: Path, unknown: Path, per_class: int) -> dict[str, int]:
    """Copy the synthetic images into ``known/<class>/`` (at most ``per_class`` each) and ``unknown/``; their counts."""
    labels = {row["image_id"]: row["label"] for row in csv.DictReader(io.StringIO((data / LESIONS_CSV).read_text()))}
    counts = {name: 0 for name in (*KNOWN, "unknown")}
    for archive in sorted(data.glob("*.zip")):
        with zipfile.ZipFile(archive) as images:
            for member in sorted(images.namelist()):
                image_id = Path(member).stem
                label = labels.get(image_id)
                if label in KNOWN and counts[label] < per_class:
                    folder, counts[label] = known / label, counts[label] + 1
                elif label in UNKNOWN:
                    folder, counts["unknown"] = unknown, counts["unknown"] + 1
                else:
                    continue
                folder.mkdir(parents=True, exist_ok=True)
                (folder / Path(member).name).write_bytes(images.read(member))
    return counts


def scores_of(ckpt: Path, unknown: Path) -> dict[str, dict]:
    """Per score, the detection report of the known types' test hold-out against the unknown types' images."""
    module = LesionClassifier.load_from_checkpoint(ckpt)
    datamodule = checkpoint_datamodule(module.hparams, {"dataset": {}, "batch_size": 64, "num_workers": 0})
    datamodule.prepare_data()
    datamodule.setup("test")
    known = predict_with_energy(module, datamodule.loader(prediction_items(datamodule.test_set, module, 1)))[:2]
    others = prediction_items(folder_images(module.hparams, unknown), module, 1)
    novel = predict_with_energy(module, DataLoader(others, batch_size=64))[:2]
    return {name: detection_report(score(*known), score(*novel)) for name, score in SCORES.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 400 images, 20 per type, 1 epoch (a smoke run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--n", type=int, default=800)
    parser.add_argument("--per-class", type=int, default=80)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.n, args.per_class, args.epochs = args.seeds[:1], 400, 20, 1
    results: dict[str, list[dict]] = {name: [] for name in SCORES}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "LESION_CACHE": str(Path(tmp) / "cache")}
        os.environ["LESION_CACHE"] = env["LESION_CACHE"]  # this process's predictions cache there too
        data = write_synthetic("isic2018", Path(tmp) / "data", n=args.n, seed=0)
        known, unknown = Path(tmp) / "known", Path(tmp) / "unknown"
        counts = split_types(data, known, unknown, args.per_class)
        shutil.rmtree(data)
        sweep = Path(tmp) / "sweep"
        done = subprocess.run([
            sys.executable, str(REPO / "train.py"), "-m", f"seed={','.join(map(str, args.seeds))}", "dataset=folder",
            f"dataset.root={known}", "model=baseline", "model.backbone=resnet18", "model.weights=none",
            "dataset.image_size=32", "dataset.batch_size=16", "dataset.num_workers=0", "optimizer.lr=0.001",
            "trainer=cpu", f"trainer.max_epochs={args.epochs}", "patience=null", "logger=csv",
            f"hydra.sweep.dir={sweep}",
        ], cwd=tmp, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"train.py failed:\n{done.stderr[-4000:]}")
        for job, seed in enumerate(args.seeds):
            for name, report in scores_of(sweep / str(job) / "checkpoints" / "best.ckpt", unknown).items():
                results[name].append(report)
                print(f"  {name:6s} seed {seed}: AUROC {report['ood/auroc']:.4f}, FPR at 95 % TPR "
                      f"{report['ood/fpr95']:.4f} ({report['ood/in_images']} known, {report['ood/out_images']} unknown)")
    print(f"synthetic ISIC 2018: known {', '.join(f'{c} {counts[c]}' for c in KNOWN)}; unknown "
          f"{'/'.join(UNKNOWN)} {counts['unknown']}; ResNet-18 from scratch, 32 px, {args.epochs} epochs")
    means = {}
    for name, reports in results.items():
        for key, label in (("ood/auroc", "AUROC"), ("ood/fpr95", "FPR at 95 % TPR")):
            values = [r[key] for r in reports]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            print(f"  {name:6s} {label} {statistics.mean(values):.4f} ± {spread:.4f} over {len(values)} seed(s)")
        means[name] = statistics.mean(r["ood/auroc"] for r in reports)
    print(f"ratio energy/MSP = {means['energy'] / means['MSP']:.2f}× (mean detection AUROC)")


if __name__ == "__main__":
    main()
