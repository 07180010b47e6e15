"""The quickstart's figures in the README: ``experiment=quickstart`` over seeds, with and without balancing.

    python benchmarks/quickstart.py [--seeds 42 1 2] [--balance sampler none]

Runs ``python train.py experiment=quickstart seed=S balance=B`` for every seed and balancing (each
in a temporary folder, the synthetic data under ``$LESION_CACHE``), and prints per run its last
line's figures (validation BACC and the epoch of ``best.ckpt``, test BACC and macro AUC), the
per-class test recall, and the wall time. The README's quickstart section quotes these lines;
``tests/test_readme_figures.py`` checks its headline line (the default seed) against a fresh run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def quickstart(seed: int, balance: str, folder: Path) -> tuple[dict, dict, float]:
    """Validation and test metrics of one quickstart run, and its wall time in seconds."""
    run_dir = folder / f"seed{seed}-{balance}"
    start = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "train.py"), "experiment=quickstart", f"seed={seed}",
                    f"balance={balance}", f"hydra.run.dir={run_dir}"], check=True, cwd=folder,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    return (json.loads((run_dir / "val_metrics.json").read_text()),
            json.loads((run_dir / "test_metrics.json").read_text()), seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--balance", nargs="+", default=["sampler", "none"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for balance in args.balance:
            for seed in args.seeds:
                val, test, seconds = quickstart(seed, balance, Path(tmp))
                recall = ", ".join(f"{c} {test[f'recall/{c}']:.2f}" if test[f"recall/{c}"] is not None else f"{c} —"
                                   for c in test["classes"])
                print(f"balance={balance} seed={seed}: validation: bacc {val['bacc']:.4f} (epoch {val['epoch']}); "
                      f"test: bacc {test['bacc']:.4f}, auc_macro {test['auc_macro']:.4f}  [{seconds:.0f} s]")
                print(f"    test recall: {recall}")


if __name__ == "__main__":
    main()
