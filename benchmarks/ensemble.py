"""Cost of an ensemble evaluation against evaluating its members one by one, in one process.

    python benchmarks/ensemble.py [--quick] [--members 3] [--repeats 3]

Trains ``--members`` quickstart models (``experiment=quickstart``, seeds 1…K, 2 epochs) through
``train.py``, then times ``lesion.evaluate.run.run`` with the evaluate defaults (bootstrap, plots,
16 Grad-CAMs per model) on the test split: once per member, and once for the ensemble of all of
them (``ckpt=[…]``). Each timing is the best of ``--repeats``; the image cache is built before
timing. Prints both times and the ratio ensemble / (sum of the single evaluations).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from lesion.evaluate.run import run

REPO = Path(__file__).resolve().parents[1]


def timed(overrides: list[str], repeats: int) -> float:
    """Best wall time of ``evaluate.py <overrides>`` run in this process."""
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose("evaluate", overrides=overrides)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(cfg)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 members of 1 epoch on 60 images, 1 repeat, no Grad-CAM (a smoke run)")
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    extra, training = [], ["trainer.max_epochs=2"]
    if args.quick:
        args.members, args.repeats, extra = 2, 1, ["gradcam.n=0", "bootstrap=10"]
        training = ["trainer.max_epochs=1", "dataset.synthetic_n=60"]
    with tempfile.TemporaryDirectory() as tmp:
        sweep = Path(tmp) / "sweep"
        seeds = ",".join(str(k) for k in range(1, args.members + 1))
        done = subprocess.run([sys.executable, str(REPO / "train.py"), "-m", f"seed={seeds}", "experiment=quickstart",
                               *training, f"hydra.sweep.dir={sweep}"], cwd=tmp, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"train.py failed:\n{done.stderr[-4000:]}")
        members = [sweep / str(k) / "checkpoints" / "best.ckpt" for k in range(args.members)]
        common = [*extra, "num_workers=0"]
        singles = [timed([f"ckpt={m}", f"out={tmp}/single{k}", *common], args.repeats) for k, m in enumerate(members)]
        ensemble = timed([f"ckpt=[{','.join(map(str, members))}]", f"out={tmp}/ensemble", *common], args.repeats)
    print(f"{args.members} quickstart members, evaluate defaults{' (quick)' if args.quick else ''}, best of {args.repeats}")
    for k, seconds in enumerate(singles, 1):
        print(f"  member {k} alone: {seconds:.2f} s")
    print(f"  the {args.members} one by one: {sum(singles):.2f} s; as one ensemble: {ensemble:.2f} s")
    print(f"ratio ensemble/singles = {ensemble / sum(singles):.2f}×")


if __name__ == "__main__":
    main()
