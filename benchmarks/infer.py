"""Inference overhead of ``lesion.evaluate.run.predict`` on the CPU versus a plain ``torch.no_grad()`` loop.

    python benchmarks/infer.py [--quick] [--net barata|baseline] [--images 256] [--repeats 5]

``predict(module, loader)`` is the prediction path of ``evaluate.py`` (tqdm bar, device transfer,
per-batch softmax, stacking, NumPy result). The plain side runs ``module.net(x).softmax(1)`` over
the same ``DataLoader`` of in-memory random images under ``torch.no_grad()`` and concatenates
the result. The module is a ``LesionClassifier`` built from ``conf/model/<net>.yaml`` with
``weights=none`` in eval mode. After one untimed pass of each side, ``--repeats`` passes
alternate predict, plain, predict, plain, …; the medians and their ratio are printed.
``predict(..., flips=True)`` (8 flips/rotations per image, so about 8× the work) is timed
separately, ``--tta-repeats`` times, for information.

Target: predict / plain ≤ 1.10× (no flips). Both sides use ``--threads`` intra-op threads, one
by default: several threads on cores that other processes also use can run many times slower and
drown the difference; ``--threads <cores>`` on a dedicated machine. Timings depend on the machine
and its load; the median of alternating passes tempers the noise.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lesion.evaluate.predict import predict
from lesion.train.module import LesionClassifier
from lesion.train.run import compose_classifier

CONF = Path(__file__).resolve().parents[1] / "conf"


@torch.no_grad()
def plain_predict(module: LesionClassifier, loader: DataLoader) -> np.ndarray:
    """Class probabilities (N×K) of every image in ``loader``, in order."""
    return torch.cat([module.net(images).softmax(1) for images, _ in loader]).numpy()


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds), for the smoke test")
    parser.add_argument("--net", choices=["barata", "baseline"], default="barata")
    parser.add_argument("--backbone", choices=["resnet18", "resnet34", "resnet50"], default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=256, help="images per pass")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes of each side")
    parser.add_argument("--tta-repeats", type=int, default=2, help="timed passes of predict(flips=True); 0 = none")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads, both sides")
    args = parser.parse_args()
    if args.quick:
        args.images, args.batch_size, args.repeats, args.tta_repeats = 16, 8, 2, 1

    torch.set_num_threads(args.threads)
    pl.seed_everything(0, verbose=False)
    module = compose_classifier(CONF, [f"model={args.net}", f"model.backbone={args.backbone}",
                                           "model.weights=none", f"dataset.image_size={args.image_size}",
                                           "scheduler=null"]).eval()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.images, 3, args.image_size, args.image_size, generator=generator)
    labels = torch.randint(len(module.hparams.classes), (args.images,), generator=generator)
    loader = DataLoader(TensorDataset(images, labels), batch_size=args.batch_size)
    sides = {"predict": lambda: predict(module, loader), "plain": lambda: plain_predict(module, loader)}

    print(f"predict vs plain no_grad loop: {args.net} {args.backbone}, {args.image_size} px, {args.images} "
          f"images, batch {args.batch_size}, CPU, torch threads {torch.get_num_threads()}")
    for run in sides.values():
        run()
    print(f"warm-up: one pass per side (not timed); {args.repeats} timed passes per side, alternating")
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    print(f"   {'pass':<6}{'predict s':>11}{'plain s':>10}")
    for number in range(1, args.repeats + 1):
        for name, run in sides.items():
            seconds[name].append(timed(run))
        print(f"   {number:<6}{seconds['predict'][-1]:>11.3f}{seconds['plain'][-1]:>10.3f}")
    median = {name: statistics.median(values) for name, values in seconds.items()}
    for name, value in median.items():
        print(f"median {name}: {value:.3f} s ({args.images / value:.1f} img/s)")
    if args.tta_repeats > 0:
        tta = statistics.median(timed(lambda: predict(module, loader, flips=True)) for _ in range(args.tta_repeats))
        print(f"median predict(flips=True): {tta:.3f} s over {args.tta_repeats} passes ({args.images / tta:.1f} "
              f"img/s); tta/plain {tta / median['plain']:.2f}× (information: 8 views, expected about 8×)")
    print(f"ratio predict/plain = {median['predict'] / median['plain']:.3f}× (target ≤ 1.10×, no flips)")


if __name__ == "__main__":
    main()
