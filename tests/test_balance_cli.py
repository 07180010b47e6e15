"""Balancing through the CLI: the headline SMOTE-Tomek command, balance.json, the G-series sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from lesion.data.layouts import LAYOUTS

pytestmark = pytest.mark.slow

SMALL = ["trainer=cpu", "model.backbone=resnet18", "model.weights=none", "dataset.image_size=32",
         "dataset.batch_size=4", "dataset.num_workers=0"]


@pytest.fixture(scope="module")
def smote_run(run_cli, tmp_path_factory) -> Path:
    """The headline command, small: synthetic ISIC 2018, SMOTE-Tomek on embeddings, focal loss."""
    run_dir = tmp_path_factory.mktemp("smote")
    run_cli("train.py", "dataset=synthetic2018", "balance=smote_tomek", "loss=focal", *SMALL,
            "dataset.synthetic_n=60", "balance.smote_tomek.head_epochs=3", f"hydra.run.dir={run_dir}")
    return run_dir


def test_smote_run_records_the_resampling(smote_run):
    report = json.loads((smote_run / "balance.json").read_text())["smote_tomek"]
    before, after = report["counts_before"], report["counts_after"]
    assert list(before) == list(LAYOUTS["isic2018"].classes)
    assert sum(before.values()) == 60  # every training image embedded once
    assert before["NV"] == max(before.values())
    # SMOTE raises every class to the majority; Tomek links then remove a few.
    assert all(before["NV"] - 5 <= n <= before["NV"] for n in after.values())
    assert report["k_neighbors"] <= min(before.values()) - 1


def test_smote_checkpoint_predicts_on_images_as_the_head_did_on_embeddings(smote_run, run_cli, tmp_path):
    checkpoint = torch.load(smote_run / "checkpoints" / "best.ckpt", weights_only=True)
    assert any(k.startswith("net.backbone.") for k in checkpoint["state_dict"])
    log = pd.read_csv(smote_run / "logs" / "head" / "metrics.csv")
    best_val = log["val/bacc"].dropna().max()
    out = tmp_path / "eval"
    run_cli("evaluate.py", f"ckpt={smote_run / 'checkpoints' / 'best.ckpt'}", "split=val", f"out={out}")
    # The head was validated on embeddings; the checkpoint now runs on the images themselves.
    assert json.loads((out / "metrics.json").read_text())["bacc"] == pytest.approx(best_val, abs=1e-6)
    test_metrics = json.loads((smote_run / "test_metrics.json").read_text())
    assert sum(map(sum, test_metrics["confusion"])) == 20


def test_headline_command_on_the_real_uda1_images(uda1, run_cli, tmp_path):
    run_dir = tmp_path / "run"
    run_cli("train.py", "dataset=isic2017", f"dataset.root={uda1}", "balance=smote_tomek", "loss=focal",
            *SMALL[:4], "dataset.batch_size=32", "dataset.num_workers=2", "balance.smote_tomek.head_epochs=2",
            f"hydra.run.dir={run_dir}")
    report = json.loads((run_dir / "balance.json").read_text())["smote_tomek"]
    assert report["counts_before"] == {"NV": 261, "SK": 0, "MEL": 105}
    assert report["counts_after"]["SK"] == 0 and report["counts_after"]["MEL"] > 200
    metrics = json.loads((run_dir / "test_metrics.json").read_text())
    assert isinstance(metrics["auc/MEL"], float) and metrics["auc/SK"] is None
    out = tmp_path / "eval"
    run_cli("evaluate.py", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}", "split=test", f"out={out}")
    assert json.loads((out / "metrics.json").read_text())["confusion"] == metrics["confusion"]


def test_sampler_with_class_weighted_loss_is_refused(run_cli, tmp_path):
    result = run_cli("train.py", "dataset=synthetic2018", "balance=sampler", "loss=weighted_ce", *SMALL,
                     "dataset.synthetic_n=30", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "lesion: error: balance.sampler: " in result.stderr and "twice" in result.stderr


def test_g_series_sweep_and_summary(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    run_cli("train.py", "-m", "experiment=glob(g*)", "dataset.synthetic=true", "dataset.synthetic_n=30",
            *SMALL, "trainer.fast_dev_run=true", "balance.smote_tomek.head_epochs=1", f"hydra.sweep.dir={sweep}",
            env={"LESION_DATA": str(tmp_path / "data")})
    jobs = [p for p in sweep.iterdir() if (p / ".hydra").is_dir()]
    assert len(jobs) == 28
    assert not list(sweep.glob("*/error.txt"))
    for job in jobs:
        balance = json.loads((job / "balance.json").read_text())
        assert "steps" in balance
    result = run_cli("lesion.summary", str(sweep))
    table = pd.read_csv(sweep / "summary.csv")
    assert len(table) == 28
    assert sorted(table["experiment"]) == sorted([f"G1.{k}" for k in range(1, 19)] + ["G3.1", "G3.2", "G3.3",
                                                 "G6.1", "G6.2", "G8.1", "G8.2", "G9.1", "G9.2", "G9.3"])
    assert table["status"].eq("ok").all()
    assert "| G9.3 |" in result.stdout and (sweep / "summary.md").is_file()


def test_backbone_from_an_earlier_run(trained_run, run_cli, tmp_path):
    earlier = trained_run / "checkpoints" / "best.ckpt"
    run_dir = tmp_path / "run"
    run_cli("train.py", "dataset=synthetic2018", "balance=smote_tomek", f"balance.backbone_ckpt={earlier}", *SMALL,
            "dataset.synthetic_n=30", "balance.smote_tomek.head_epochs=1", f"hydra.run.dir={run_dir}")
    before = torch.load(earlier, weights_only=True)["state_dict"]
    after = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    backbone = [k for k in before if k.startswith("net.backbone.")]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)  # loaded, then frozen
    result = run_cli("train.py", "dataset=synthetic2018", "balance=smote_tomek",
                     f"balance.backbone_ckpt={tmp_path / 'missing.ckpt'}", *SMALL, "dataset.synthetic_n=30",
                     check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "lesion: error: " in result.stderr and "missing.ckpt" in result.stderr
