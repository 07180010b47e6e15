"""GPU training throughput from the image cache: bf16-mixed + channels-last versus fp32, in one run.

    python benchmarks/gpu_throughput.py --steps 200          # one GPU; sized for < 5 minutes on an H200
    python benchmarks/gpu_throughput.py --quick --allow-cpu  # no GPU: tiny sizes on the CPU (seconds)

A synthetic ISIC 2018 dataset (``--images`` training images at 600×450, val and test as
``lesion.data.synthetic`` sizes them) is written to a temporary folder and its training split is
cached (``IsicDataModule(cache=True)``, 288 px squares for 224 px input), so the loader's workers
(cores − 1) read the memmap and run the training augmentation as real training does. The
training set is repeated to ``(warm-up + timed steps) × batch`` entries so that one epoch spans
the whole run: the refill of the loader pipeline at each epoch start is amortised by ISIC 2018's
~80-step epochs and would not be by a few hundred images. The data loader alone is timed first
(an upper bound for both configurations).

Each configuration trains a freshly seeded ``LesionClassifier`` (``conf/model/<net>.yaml``,
ResNet-50, ``weights=none``) with a Lightning Trainer (one device, no validation, logger or
checkpoints) for ``warm-up + steps`` steps; images per second are counted from the start of the
first timed batch to the end of the last, with the device synchronised at both ends:

- ``fp32``: ``trainer.precision=32-true``, ``channels_last=false``;
- ``bf16-mixed + channels_last``: ``trainer.precision=bf16-mixed``, ``channels_last=true``.

Printed: the GPU, img/s and peak allocated memory (``torch.cuda.max_memory_allocated``) of each,
and the speed-up. Without a CUDA GPU the script says so and exits 0, unless ``--allow-cpu``: then
it runs the quick sizes on the CPU (bf16-mixed autocasts on the CPU too), which exercises the
code, not the figures. Timings depend on the machine and on loader workers competing for cores.
"""

from __future__ import annotations

import argparse
import gc
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from lesion.data.cache import available_cores
from lesion.data.datamodule import IsicDataModule
from lesion.data.synthetic import write_synthetic
from lesion.train.module import LesionClassifier
from lesion.train.run import compose_classifier

CONF = Path(__file__).resolve().parents[1] / "conf"
SOURCE_SIZE = (600, 450)  # width, height of the synthetic images
CONFIGS = {"fp32": ("32-true", False), "bf16-mixed + channels_last": ("bf16-mixed", True)}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SteadyStateTimer(pl.Callback):
    """Seconds from the start of batch ``warmup`` to the end of the last batch, device synchronised."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.start: float | None = None
        self.seconds: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            synchronize(pl_module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == trainer.max_steps:
            synchronize(pl_module.device)
            self.seconds = time.perf_counter() - self.start


def loader_images_per_second(datamodule: IsicDataModule, warmup: int, steps: int) -> float:
    """Training batches per second of the loader alone (after ``warmup`` batches), in images."""
    batches = iter(datamodule.train_dataloader())
    for _ in range(warmup):
        next(batches)
    start = time.perf_counter()
    for _ in range(steps):
        next(batches)
    return steps * datamodule.batch_size / (time.perf_counter() - start)


def train_images_per_second(module: LesionClassifier, datamodule: IsicDataModule, precision: str,
                            warmup: int, steps: int) -> float:
    timer = SteadyStateTimer(warmup)
    trainer = pl.Trainer(accelerator="auto", devices=1, precision=precision, max_steps=warmup + steps,
                         limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    trainer.fit(module, datamodule=datamodule)
    return steps * datamodule.batch_size / timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds), for the smoke test")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="without a GPU, run the quick sizes on the CPU (one thread)")
    parser.add_argument("--net", choices=["barata", "baseline"], default="barata")
    parser.add_argument("--backbone", choices=["resnet18", "resnet34", "resnet50"], default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200, help="timed training steps per configuration")
    parser.add_argument("--warmup-steps", type=int, default=20, help="untimed steps before them")
    parser.add_argument("--images", type=int, default=400, help="synthetic training images (≥ 21)")
    parser.add_argument("--workers", type=int, default=max(0, available_cores() - 1), help="loader workers")
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    if not gpu and not args.allow_cpu:
        print("gpu_throughput: no CUDA GPU visible, nothing measured (--allow-cpu runs tiny sizes on the CPU)")
        return
    if args.quick or not gpu:
        args.backbone, args.image_size, args.batch_size, args.steps, args.warmup_steps, args.images = \
            "resnet18", 64, 4, 2, 1, 21
    if not gpu:
        torch.set_num_threads(1)  # the loader workers use the other cores

    # Trainer banners and the hint that validation is skipped (by design) would repeat per configuration.
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`.*")
    modules = {}
    for name, (_, channels_last) in CONFIGS.items():
        pl.seed_everything(0, verbose=False)  # the same initial weights for every configuration
        modules[name] = compose_classifier(CONF, [
            f"model={args.net}", f"model.backbone={args.backbone}", "model.weights=none",
            f"dataset.image_size={args.image_size}", "scheduler=null", f"channels_last={channels_last}"])
    hp = modules["fp32"].hparams
    device = torch.cuda.get_device_name() if gpu else "CPU (no GPU: code check only, not a GPU figure)"
    print(f"Training throughput from the image cache: {args.net} {args.backbone}, {args.image_size} px, "
          f"batch {args.batch_size}, {args.warmup_steps} warm-up + {args.steps} timed steps per configuration")
    print(f"device: {device}; torch {torch.__version__}, {args.workers} loader workers")

    with tempfile.TemporaryDirectory(prefix="lesion-gpu-throughput-") as tmp:
        start = time.perf_counter()
        root = write_synthetic("isic2018", Path(tmp) / "data", n=args.images, seed=0, image_size=SOURCE_SIZE)
        written = time.perf_counter() - start
        datamodule = IsicDataModule("isic2018", str(root), image_size=args.image_size, batch_size=args.batch_size,
                                    num_workers=args.workers, mean=hp.mean, std=hp.std, cache=True,
                                    cache_dir=str(Path(tmp) / "cache"))
        datamodule.setup("fit")
        start = time.perf_counter()
        datamodule.train_set.images.build()
        cached = time.perf_counter() - start
        entries = (args.warmup_steps + args.steps) * args.batch_size
        datamodule.train_set.indices = np.resize(datamodule.train_set.indices, entries)
        print(f"synthetic isic2018: {args.images} training images at {SOURCE_SIZE[0]}×{SOURCE_SIZE[1]} written in "
              f"{written:.1f} s, cached at {datamodule.cache_size} px in {cached:.1f} s; repeated to {entries} "
              f"entries so that one epoch spans the run")
        print(f"data loader alone: {loader_images_per_second(datamodule, args.warmup_steps, args.steps):.1f} img/s")

        print(f"   {'configuration':<30}{'img/s':>10}{'peak GiB':>10}")
        images_per_second = {}
        for name, (precision, _) in CONFIGS.items():
            if gpu:
                gc.collect()  # the previous Trainer ↔ module cycle holds its optimizer state on the GPU
                torch.cuda.reset_peak_memory_stats()
            images_per_second[name] = train_images_per_second(modules.pop(name), datamodule, precision,
                                                              args.warmup_steps, args.steps)
            peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f}" if gpu else "n/a"
            print(f"   {name:<30}{images_per_second[name]:>10.1f}{peak:>10}")
            if gpu:
                torch.cuda.empty_cache()
    fp32, bf16_channels_last = images_per_second.values()
    print(f"ratio bf16-mixed+channels_last/fp32 = {bf16_channels_last / fp32:.3f}× (speed-up in img/s)")


if __name__ == "__main__":
    main()
