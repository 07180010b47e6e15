"""Image loading: the naive per-epoch decode against lesion's image cache.

    python benchmarks/loader.py [--data ../shared/data/isic2017-uda1] [--large 48] [--quick]

Three image sets: the training split of the real UDA-1 images (official ISIC 2017 layout; most
were downscaled to ≤ 768 px when the set was packed), its original full-resolution JPEGs
(over 2 MP, up to 10 MP), and ``--large`` copies of its images upscaled to 12 MP (4000×3000, the
size of many ISIC 2017 originals); the last two written to a temporary folder in the same layout.

For each set it measures, in one process:

* epoch throughput (images/s) of the training input pipeline:
  - naive: every item fully decoded and resized to the input size, then augmented (what the
    original notebooks did every epoch);
  - cache: every item read from the memmap of pre-resized squares, then augmented;
* build: decoding each image once as the cache does (``draft`` + resize, one process) against a
  full decode of each image.

Targets: epoch throughput ≥ 20× naive, cache build ≥ 2.5× faster than naive decoding.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from lesion.data.cache import SquareImages, square_size
from lesion.data.datamodule import LesionDataset
from lesion.data.readers import read_split
from lesion.data.layouts import LAYOUTS
from lesion.data.transforms import TrainPreset

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class NaiveImages(SquareImages):
    """Full decode (no draft) and resize to the input size on every read, as the notebooks did."""

    def __getitem__(self, row: int) -> np.ndarray:
        image = self.table.images.read(self.table.ids[row], max_pixels=self.max_pixels)
        return np.asarray(image.resize((self.size, self.size), Image.Resampling.BILINEAR))


def subset_copy(source: Path, dest: Path, ids: list[str], upscale: tuple[int, int] | None = None) -> Path:
    """An ISIC 2017 training split of images ``ids`` of ``source`` in folder layout: the original
    bytes, or re-encoded (JPEG q90) at ``upscale`` = (width, height)."""
    layout = LAYOUTS["isic2017"]
    table = read_split(layout, source, "train")
    folder = dest / layout.splits["train"].images[0]
    folder.mkdir(parents=True)
    for image_id in ids:
        if upscale is None:
            (folder / f"{image_id}.jpg").write_bytes(table.images.read_bytes(image_id))
        else:
            table.images.read(image_id).resize(upscale, Image.Resampling.BICUBIC).save(
                folder / f"{image_id}.jpg", quality=90)
    csv = pd.read_csv(table.csv_path, dtype={layout.id_column: str})
    csv[csv[layout.id_column].isin(ids)].to_csv(dest / layout.splits["train"].csv[0], index=False)
    return dest


def epoch_rate(dataset: LesionDataset) -> float:
    """Images per second of one pass over ``dataset``."""
    start = time.perf_counter()
    for item in range(len(dataset)):
        dataset[item]
    return len(dataset) / (time.perf_counter() - start)


def measure(name: str, root: Path, image_size: int, cache_dir: Path) -> dict:
    table = read_split("isic2017", root, "train")
    preset = TrainPreset(image_size, *IMAGENET)
    size = square_size(image_size, None)
    pixels = [table.images.read(i).size for i in table.ids]
    megapixels = np.array([w * h for w, h in pixels]) / 1e6

    start = time.perf_counter()
    for image_id in table.ids:
        table.images.read(image_id)
    full_decode = time.perf_counter() - start
    cached = SquareImages(table, size, cache_dir, max_pixels=10**9)
    start = time.perf_counter()
    cached.build(workers=1)  # one process, as the full decode it is compared with
    build = time.perf_counter() - start

    naive_rate = epoch_rate(LesionDataset(NaiveImages(table, image_size, None, 10**9), preset))
    cache_rate = epoch_rate(LesionDataset(cached, preset))
    return {"set": name, "images": len(table), "MP mean": megapixels.mean(), "MP max": megapixels.max(),
            "naive img/s": naive_rate, "cache img/s": cache_rate, "epoch ×": cache_rate / naive_rate,
            "full decode s": full_decode, "cache build s": build, "build ×": full_decode / build}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/isic2017-uda1")
    parser.add_argument("--large", type=int, default=48, help="number of 12 MP upscaled copies")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--quick", action="store_true", help="a few images per set (seconds), for the smoke test")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"benchmarks/loader.py: {args.data} not found — pass --data <ISIC 2017 layout folder>")

    work = Path(tempfile.mkdtemp(prefix="lesion-loader-"))
    try:
        train = read_split("isic2017", args.data, "train")
        everything = args.data if not args.quick else subset_copy(args.data, work / "all", train.ids[:12])
        rows = [measure("UDA-1 train, all", everything, args.image_size, work / "cache")]
        originals = [i for i in train.ids if np.prod(train.images.read(i).size) > 2e6][:2 if args.quick else None]
        rows.append(measure("UDA-1 train, originals", subset_copy(args.data, work / "originals", originals),
                            args.image_size, work / "cache"))
        large = subset_copy(args.data, work / "large", train.ids[:2 if args.quick else args.large], upscale=(4000, 3000))
        rows.append(measure("12 MP copies", large, args.image_size, work / "cache"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = pd.DataFrame(rows).set_index("set")
    print(f"Training input pipeline at {args.image_size} px, one process (no DataLoader workers)\n")
    print(table.to_string(float_format=lambda v: f"{v:.2f}"))
    print("\ntargets: epoch × ≥ 20, build × ≥ 2.5")
    for name, row in table.iterrows():
        print(f"{name}: epoch throughput {row['epoch ×']:.1f}× naive, cache build {row['build ×']:.1f}× "
              "faster than a full decode")


if __name__ == "__main__":
    main()
