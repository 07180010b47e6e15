"""Training-loop overhead of our LightningModule on the CPU: ``Trainer.fit`` versus a plain PyTorch loop.

    python benchmarks/train_overhead.py [--quick] [--net barata|baseline] [--steps 10] [--repeats 5]

Both sides train the same net (built from ``conf/model/<net>.yaml`` with ``weights=none``, reset
to the same initial weights before every run) on the same in-memory ``TensorDataset`` of random
images and labels, with the same batch size, AdamW settings (``conf/train.yaml``), loss
(cross-entropy without class weights, ``conf/loss/ce.yaml``, on the logits of the one decoding
step of a flat net, teacher-forced like ``LesionClassifier``) and number of steps. The Lightning
side is ``LesionClassifier`` (its loss, metrics and ``self.log`` calls) in a ``pl.Trainer``
without validation, logger, checkpoints, progress bar or summary; no LR scheduler on either side.
A run is timed from building the Trainer (or optimizer) to the last step, so Lightning's per-fit
setup and epoch-end metrics count against it; more ``--steps`` amortise them as real epochs do.
After one untimed warm-up run of each side, ``--repeats`` runs alternate Lightning, plain,
Lightning, plain, …; the medians and their ratio are printed.

Target: lightning / plain ≤ 1.10×. Both sides use ``--threads`` intra-op threads, one by default:
several threads on cores that other processes also use can run many times slower and drown the
difference. On a dedicated machine ``--threads <cores>`` shortens the compute and so raises the
ratio (Lightning's cost is per step and per fit, not per FLOP). Timings depend on the machine and
its load; the median of alternating runs tempers the noise.
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from lesion.train.module import LesionClassifier
from lesion.train.run import compose_classifier

CONF = Path(__file__).resolve().parents[1] / "conf"


def random_loader(images: int, image_size: int, batch_size: int, num_classes: int) -> DataLoader:
    """Seeded random normalised images and labels, in memory, in a fixed order."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(images, 3, image_size, image_size, generator=generator)
    y = torch.randint(num_classes, (images,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, drop_last=True)


def lightning_fit(module: LesionClassifier, loader: DataLoader, steps: int) -> None:
    trainer = pl.Trainer(accelerator="cpu", max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(module, train_dataloaders=loader)


def plain_fit(module: LesionClassifier, loader: DataLoader, steps: int) -> None:
    """The same steps as ``LesionClassifier.training_step`` on ``module.net``, without Lightning."""
    net, settings = module.net, module.hparams.optimizer
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    net.train()
    for _, (images, labels) in zip(range(steps), loader):
        loss = F.cross_entropy(net.step_logits(images, labels)[-1], labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds), for the smoke test")
    parser.add_argument("--net", choices=["barata", "baseline"], default="barata")
    parser.add_argument("--backbone", choices=["resnet18", "resnet34", "resnet50"], default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per timed run")
    parser.add_argument("--warmup-steps", type=int, default=2, help="steps of the untimed warm-up run of each side")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each side")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads, both sides")
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.steps, args.warmup_steps, args.repeats = 4, 2, 1, 2

    # Trainer banners and the hints about what this setup leaves out by design would repeat every run.
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`.*")
    torch.set_num_threads(args.threads)
    pl.seed_everything(0, verbose=False)
    module = compose_classifier(CONF, [f"model={args.net}", f"model.backbone={args.backbone}",
                                           "model.weights=none", f"dataset.image_size={args.image_size}",
                                           "scheduler=null"])
    initial = copy.deepcopy(module.net.state_dict())
    loader = random_loader(args.steps * args.batch_size, args.image_size, args.batch_size,
                           len(module.hparams.classes))
    sides = {"lightning": lightning_fit, "plain": plain_fit}

    print(f"Lightning fit vs plain PyTorch loop: {args.net} {args.backbone}, {args.image_size} px, batch "
          f"{args.batch_size}, {args.steps} steps, AdamW lr {module.hparams.optimizer['lr']:g}, "
          f"CPU, torch threads {torch.get_num_threads()}")
    for fit in sides.values():
        module.net.load_state_dict(initial)
        fit(module, loader, args.warmup_steps)
    print(f"warm-up: one run of {args.warmup_steps} steps per side (not timed); "
          f"{args.repeats} timed runs per side, alternating")
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    print(f"   {'run':<5}{'lightning s':>13}{'plain s':>10}")
    for run in range(1, args.repeats + 1):
        for name, fit in sides.items():
            module.net.load_state_dict(initial)
            start = time.perf_counter()
            fit(module, loader, args.steps)
            seconds[name].append(time.perf_counter() - start)
        print(f"   {run:<5}{seconds['lightning'][-1]:>13.3f}{seconds['plain'][-1]:>10.3f}")
    median = {name: statistics.median(values) for name, values in seconds.items()}
    for name, value in median.items():
        print(f"median {name}: {value:.3f} s ({1000 * value / args.steps:.1f} ms/step, "
              f"{args.steps * args.batch_size / value:.1f} img/s)")
    print(f"ratio lightning/plain = {median['lightning'] / median['plain']:.3f}× (target ≤ 1.10×)")


if __name__ == "__main__":
    main()
