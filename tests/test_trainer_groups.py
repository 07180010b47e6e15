"""The ``callbacks`` and ``logger`` config groups: adding, removing and retuning one is an override."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

pytestmark = pytest.mark.slow

SMALL = ["dataset=synthetic2018", "model=baseline", "trainer=cpu", "model.backbone=resnet18", "model.weights=none",
         "dataset.image_size=32", "dataset.batch_size=4", "dataset.num_workers=0", "dataset.synthetic_n=30"]


def test_callbacks_and_loggers_are_overrides(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    run_cli("train.py", *SMALL, "trainer.max_epochs=3", "logger=csv", "callbacks.early_stopping=null",
            "callbacks.best_checkpoint.monitor=val/loss", "callbacks.best_checkpoint.mode=min",
            "+callbacks.timer={_target_:pytorch_lightning.callbacks.Timer}", f"hydra.run.dir={run_dir}")
    assert not list((run_dir / "logs").glob("events.out.tfevents.*"))  # no TensorBoard logger
    log = pd.read_csv(run_dir / "logs" / "metrics.csv")
    epochs = log[log["val/loss"].notna()].set_index("epoch")
    assert len(epochs) == 3  # nothing stopped early
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] == int(epochs["val/loss"].idxmin())  # chosen on val/loss, lowest
    validation = json.loads((run_dir / "val_metrics.json").read_text())
    assert validation["epoch"] == best["epoch"]
    assert validation["bacc"] == pytest.approx(epochs.loc[best["epoch"], "val/bacc"], abs=1e-6)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert "Timer" in last["callbacks"]  # the added callback ran and saved its state


def test_a_run_without_callbacks_or_loggers_tests_its_last_weights(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    run_cli("train.py", *SMALL, "trainer.max_epochs=1", "callbacks=none", "logger=none", f"hydra.run.dir={run_dir}")
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "logs").exists()
    assert json.loads((run_dir / "test_metrics.json").read_text())["classes"]
    assert json.loads((run_dir / "val_metrics.json").read_text())["checkpoint"] is None
