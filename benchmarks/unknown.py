"""ISIC 2019's unknown class (UNK, "none of the others"), three ways, on synthetic data with UNK test images.

    python benchmarks/unknown.py [--quick] [--seeds 1 2 3] [--n 300] [--unknown 40] [--extra 60] [--epochs 5]

No ISIC 2019 training image is UNK, but its test set holds UNK images. This writes a synthetic
ISIC 2019 set (``--n`` training images, :mod:`lesion.data.synthetic`) and adds ``--unknown`` UNK
images to its test split (:func:`add_unknown_test_images`): seborrheic keratoses drawn by the
synthetic ISIC 2017 generator, a lesion type the ISIC 2019 training set does not have. For each
seed it trains ``model=baseline`` (ResNet-18 from random weights, 32 px) through ``train.py`` twice
and evaluates the test split as ``evaluate.py`` does:

(a) no UNK handling: trained on the ISIC 2019 training split alone, so UNK is never predicted;
(b) route A, an explicit class: ``--extra`` UNK training images added with
    ``dataset.extra=[{layout: folder, root: DIR}]`` (``DIR/UNK/``), of *another* unknown kind than
    the test's (:func:`write_other_kind`: healthy skin and warts), as in real life, where the
    images one collects are not the ones the test holds;
(c) route B, the score: model (a) evaluated with ``unknown_class=UNK`` (images flagged unknown by the
    out-of-distribution threshold are predicted UNK).

Prints each run's BACC over the 9 classes and UNK recall, their mean ± sd over the seeds, and the ratio
of route B's mean BACC to (a)'s (``ratio score/none``).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from lesion.data.layouts import LAYOUTS
from lesion.data.readers import read_split
from lesion.data.synthetic import LESIONS_CSV, split_counts, write_synthetic

REPO = Path(__file__).resolve().parents[1]
ISIC2019 = LAYOUTS["isic2019"]
UNKNOWN = "UNK"
# The test's unknown kind: a class of another generator that ISIC 2019's classes do not name.
TEST_KIND = ("isic2017", "SK")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_SKIN = np.array([232.0, 190.0, 165.0])


def _kind_images(n: int, seed: int) -> list[tuple[bytes, list[str]]]:
    """``n`` JPEG images of :data:`TEST_KIND` and their rows of ``synthetic_lesions.csv`` (cx, cy, radius)."""
    layout, label = TEST_KIND
    size = next(m for m in range(16, 100 * n, 16)
                if sum(split[label] for split in split_counts(layout, m).values()) >= n)
    with tempfile.TemporaryDirectory() as tmp:
        source = write_synthetic(layout, Path(tmp) / "data", n=size, seed=seed)
        lesions = pd.read_csv(source / LESIONS_CSV, dtype=str).set_index("image_id")
        images = []
        for split in ("train", "val", "test"):
            table = read_split(layout, source, split)
            for image_id, k in zip(table.ids, table.labels):
                if LAYOUTS[layout].classes[k] == label and len(images) < n:
                    where = lesions.loc[image_id, ["cx", "cy", "radius"]].tolist()
                    images.append((table.images.read_bytes(image_id), where))
    return images


def add_unknown_test_images(root: Path, n: int, seed: int = 0) -> list[str]:
    """Add ``n`` UNK images to the test split of the synthetic ISIC 2019 set at ``root``, in the official layout.

    The images (:data:`TEST_KIND`) go into ``ISIC_2019_Test_Input`` (the zip, or the extracted folder) under new
    ISIC ids after the set's last; ``ISIC_2019_Test_GroundTruth.csv`` gets a row each with UNK 1.0,
    ``ISIC_2019_Test_Metadata.csv`` one with the age, sex and site of a random test image, and
    ``synthetic_lesions.csv`` one with the drawn lesion.

    Returns:
        The ids added.
    """
    rng = np.random.default_rng(seed)
    files = ISIC2019.splits["test"]
    truth_path, metadata_path = root / files.csv[0], root / "ISIC_2019_Test_Metadata.csv"
    truth = pd.read_csv(truth_path, dtype=str, keep_default_na=False)
    lesions = pd.read_csv(root / LESIONS_CSV, dtype=str, keep_default_na=False)
    last = max(int(i.split("_")[1]) for i in lesions["image_id"])
    ids = [f"ISIC_{last + 1 + k:07d}" for k in range(n)]
    images = _kind_images(n, seed)
    stem = files.images[0]
    if (root / stem).is_dir():
        for image_id, (data, _) in zip(ids, images):
            (root / stem / f"{image_id}.jpg").write_bytes(data)
    else:
        with zipfile.ZipFile(root / f"{stem}.zip", "a") as archive:
            for image_id, (data, _) in zip(ids, images):
                archive.writestr(zipfile.ZipInfo(f"{stem}/{image_id}.jpg", date_time=_ZIP_TIME), data)
    rows = pd.DataFrame({ISIC2019.id_column: ids, **{c: "1.0" if c == UNKNOWN else "0.0" for c in ISIC2019.classes}})
    pd.concat([truth, rows]).to_csv(truth_path, index=False)
    metadata = pd.read_csv(metadata_path, dtype=str, keep_default_na=False)
    drawn = metadata.iloc[rng.integers(0, len(metadata), n)].assign(image=ids)
    pd.concat([metadata, drawn]).to_csv(metadata_path, index=False)
    drawn_lesions = pd.DataFrame([["test", i, UNKNOWN, *where] for i, (_, where) in zip(ids, images)],
                                 columns=lesions.columns)
    pd.concat([lesions, drawn_lesions]).to_csv(root / LESIONS_CSV, index=False)
    return ids


def write_other_kind(folder: Path, n: int, seed: int = 0) -> Path:
    """``n`` JPEG images of another unknown kind than the test's, drawn here: half healthy skin, half a grey,
    rough wart; as ``folder/UNK/other_<k>.jpg`` (a ``dataset.extra`` folder source)."""
    rng = np.random.default_rng(seed)
    (folder / UNKNOWN).mkdir(parents=True, exist_ok=True)
    for k in range(n):
        w, h = int(rng.integers(80, 113)), int(rng.integers(60, 85))
        skin = _SKIN + rng.normal(0, 8, 3) + rng.normal(0, 5, (h, w, 3))
        image = Image.fromarray(np.clip(skin, 0, 255).astype(np.uint8), "RGB")
        if k % 2:
            r = min(w, h) * rng.uniform(0.15, 0.25)
            cx, cy = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.6)
            mask = Image.new("L", (w, h), 0)
            pen = ImageDraw.Draw(mask)
            pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
            for x, y in zip(rng.uniform(cx - r, cx + r, 30), rng.uniform(cy - r, cy + r, 30)):
                pen.ellipse((x - 2, y - 2, x + 2, y + 2), fill=255)
            grey = tuple(int(v) for v in np.clip(150 + rng.normal(0, 10, 3), 0, 255))
            image = Image.composite(Image.new("RGB", (w, h), grey), image, mask.filter(ImageFilter.GaussianBlur(1)))
        image.save(folder / UNKNOWN / f"other_{k:04d}.jpg", quality=90)
    return folder


def evaluated(ckpt: Path, out: Path, unknown_class: str | None) -> dict:
    """``evaluate.py``'s report of the checkpoint's test split (in this process)."""
    from hydra import compose, initialize_config_dir

    from lesion.evaluate.run import run

    overrides = [f"ckpt={ckpt}", f"out={out}", "gradcam.n=0", "plots=false", "bootstrap=10", "num_workers=0",
                 "subgroups=none", f"unknown_class={unknown_class or 'null'}"]
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        return run(compose("evaluate", overrides=overrides))


def train(sweep: Path, seeds: list[int], data: Path, epochs: int, tmp: Path, env: dict, extra: Path | None) -> None:
    """``train.py -m seed=…`` on the ISIC 2019 set at ``data`` (with the ``extra`` folder source, if any)."""
    command = [sys.executable, str(REPO / "train.py"), "-m", f"seed={','.join(map(str, seeds))}", "dataset=isic2019",
               f"dataset.root={data}", "model=baseline", "model.backbone=resnet18", "model.weights=none",
               "dataset.image_size=32", "dataset.batch_size=16", "dataset.num_workers=0", "optimizer.lr=0.001",
               "trainer=cpu", f"trainer.max_epochs={epochs}", "patience=null", "logger=csv",
               f"hydra.sweep.dir={sweep}"]
    if extra is not None:
        command.append(f"dataset.extra=[{{layout:folder,root:{extra}}}]")
    done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"train.py failed:\n{done.stderr[-4000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 200 images, 12 UNK, 1 epoch (a smoke run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--unknown", type=int, default=40, help="UNK test images")
    parser.add_argument("--extra", type=int, default=60, help="route A's UNK training images")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("lesion").setLevel(logging.WARNING)  # the evaluations' progress; this prints their figures
    if args.quick:
        args.seeds, args.n, args.unknown, args.extra, args.epochs = args.seeds[:1], 200, 12, 12, 1
    ways = {"(a) no UNK handling": ("plain", None), "(b) route A, UNK training folder": ("extra", None),
            "(c) route B, unknown_class=UNK": ("plain", UNKNOWN)}
    results: dict[str, list[dict]] = {way: [] for way in ways}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "LESION_CACHE": str(tmp / "cache")}
        os.environ["LESION_CACHE"] = env["LESION_CACHE"]  # this process's evaluations cache there too
        data = write_synthetic("isic2019", tmp / "data", n=args.n, seed=0)
        add_unknown_test_images(data, args.unknown, seed=0)
        extra = write_other_kind(tmp / "extra", args.extra, seed=0)
        train(tmp / "plain", args.seeds, data, args.epochs, tmp, env, None)
        train(tmp / "extra", args.seeds, data, args.epochs, tmp, env, extra)
        test = read_split(ISIC2019, data, "test")
        support = np.bincount(test.labels, minlength=ISIC2019.num_classes)
        for job, seed in enumerate(args.seeds):
            for way, (sweep, unknown_class) in ways.items():
                report = evaluated(tmp / sweep / str(job) / "checkpoints" / "best.ckpt", tmp / "eval" / f"{sweep}-{job}"
                                   f"-{unknown_class}", unknown_class)
                results[way].append(report)
                print(f"  {way:34s} seed {seed}: BACC {report['bacc']:.4f}, UNK recall {report['recall/UNK']:.4f} "
                      f"({report['ood/unknown']} flagged)")
    print(f"synthetic ISIC 2019, {args.n} training images; test: {len(test.ids)} images, "
          + ", ".join(f"{c} {k}" for c, k in zip(ISIC2019.classes, support))
          + f" (UNK: {TEST_KIND[0]} {TEST_KIND[1]} drawings); route A: {args.extra} UNK training images of healthy "
          f"skin and warts; ResNet-18 from scratch, 32 px, {args.epochs} epochs")
    means = {}
    for way, reports in results.items():
        for key, label in (("bacc", "BACC (9 classes)"), ("recall/UNK", "UNK recall")):
            values = [r[key] for r in reports]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            print(f"  {way:34s} {label} {statistics.mean(values):.4f} ± {spread:.4f} over {len(values)} seed(s)")
        means[way] = statistics.mean(r["bacc"] for r in reports)
    plain, score = (means[w] for w in ("(a) no UNK handling", "(c) route B, unknown_class=UNK"))
    print(f"ratio score/none = {score / plain:.2f}× (mean BACC over 9 classes, route B against no UNK handling)")


if __name__ == "__main__":
    main()
