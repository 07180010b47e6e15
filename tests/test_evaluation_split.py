"""Evaluation sees exactly the split training saw, sweeps optimise validation (never test), and each
training stage's schedule spans that stage."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from lesion.data.datamodule import ids_digest

pytestmark = pytest.mark.slow

TINY = ["trainer=cpu", "model.backbone=resnet18", "model.weights=none", "dataset.image_size=32",
        "dataset.batch_size=4", "dataset.num_workers=0"]


@pytest.fixture(scope="module")
def no_val_split(synthetic_root, tmp_path_factory) -> Path:
    """Synthetic ISIC 2018 data with only its training split (training holds out validation, tests on it)."""
    root = tmp_path_factory.mktemp("noval") / "data"
    shutil.copytree(synthetic_root("isic2018"), root)
    for path in [*root.glob("ISIC2018_Task3_Validation_*"), *root.glob("ISIC2018_Task3_Test_*")]:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return root


@pytest.fixture(scope="module")
def holdout_run(run_cli, no_val_split, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("holdout")
    run_cli("train.py", "dataset=isic2018", f"dataset.root={no_val_split}", "model=baseline", *TINY,
            "dataset.val_fraction=0.3", "trainer.max_epochs=3", f"hydra.run.dir={run_dir}")
    return run_dir


def test_evaluate_val_reproduces_the_logged_validation_bacc_and_ids(run_cli, holdout_run, tmp_path):
    ckpt = holdout_run / "checkpoints" / "best.ckpt"
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)
    split = stored["hyper_parameters"]["split"]
    assert split["validation"] == "holdout" and split["seed"] == 42 and split["test"] == "validation"
    run_cli("evaluate.py", f"ckpt={ckpt}", "split=val", f"out={tmp_path / 'out'}", "gradcam.n=0", "plots=false",
            "num_workers=0")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    logged = pd.read_csv(holdout_run / "logs" / "metrics.csv").dropna(subset=["val/bacc"])
    epoch = stored["epoch"]
    assert metrics["bacc"] == pytest.approx(float(logged.set_index("epoch").loc[epoch, "val/bacc"]), abs=1e-6)
    val = json.loads((holdout_run / "val_metrics.json").read_text())
    assert val["epoch"] == epoch and val["bacc"] == pytest.approx(metrics["bacc"], abs=1e-6)
    ids = pd.read_csv(tmp_path / "out" / "predictions.csv")["image"].tolist()
    assert len(ids) == split["val_images"] and ids_digest(ids) == split["val_ids_sha256"]


def test_evaluate_reads_the_checkpoints_dataset_from_a_moved_root(run_cli, holdout_run, no_val_split, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(no_val_split, moved)
    out = tmp_path / "out"
    run_cli("evaluate.py", f"ckpt={holdout_run / 'checkpoints' / 'best.ckpt'}", f"dataset.root={moved}", "split=val",
            f"out={out}", "gradcam.n=0", "plots=false", "num_workers=0")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bacc"] == pytest.approx(json.loads((holdout_run / "val_metrics.json").read_text())["bacc"], abs=1e-6)
    assert (out / ".hydra" / "config.yaml").is_file()


def test_unknown_gradcam_target_is_refused_before_anything_is_written(run_cli, holdout_run, tmp_path):
    out = tmp_path / "out"
    result = run_cli("evaluate.py", f"ckpt={holdout_run / 'checkpoints' / 'best.ckpt'}", "gradcam.target=XX",
                     f"out={out}", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "lesion: error: gradcam.target: unknown class 'XX' — use one of MEL, NV, BCC, AKIEC, BKL, DF, VASC"]
    assert not out.exists()


def test_the_sweep_objective_is_the_validation_bacc(synthetic_root, tmp_path):
    from hydra import compose, initialize_config_dir

    from lesion.train.sweep import run_job

    with initialize_config_dir(str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["dataset=isic2018", f"dataset.root={synthetic_root('isic2018')}",
                                          "model=baseline", *TINY, "trainer.max_epochs=2", f"run_dir={tmp_path}"])
    objective = run_job(cfg)
    validation = json.loads((tmp_path / "val_metrics.json").read_text())
    logged = pd.read_csv(tmp_path / "logs" / "metrics.csv")["val/bacc"].dropna()
    assert objective == validation["bacc"] == pytest.approx(logged.max(), abs=1e-6)
    # This data's test split scores differently, so returning the test BACC would fail above.
    assert json.loads((tmp_path / "test_metrics.json").read_text())["bacc"] != pytest.approx(objective, abs=1e-3)


def test_evaluating_another_validation_split_is_refused(run_cli, holdout_run, no_val_split, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(no_val_split, other)
    csv = other / "ISIC2018_Task3_Training_GroundTruth.csv"
    table = pd.read_csv(csv)
    table.iloc[3:].to_csv(csv, index=False)  # three images fewer: another hold-out
    out = tmp_path / "out"
    result = run_cli("evaluate.py", f"ckpt={holdout_run / 'checkpoints' / 'best.ckpt'}", f"dataset.root={other}",
                     "split=val", f"out={out}", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("lesion: error: split: the validation split made here (")
    assert not out.exists()


def test_calibration_on_the_images_it_reports_on_is_refused(run_cli, holdout_run, tmp_path):
    # No test split here: split=test falls back to validation, where the temperature would be fitted.
    result = run_cli("evaluate.py", f"ckpt={holdout_run / 'checkpoints' / 'best.ckpt'}", "calibrate=true",
                     f"out={tmp_path / 'out'}", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("lesion: error: calibrate: would fit the temperature")
    assert not (tmp_path / "out").exists()


def test_head_stage_schedule_spans_the_head_epochs(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    run_cli("train.py", "dataset=synthetic2018", "dataset.synthetic_n=30", "model=baseline", *TINY,
            "balance=smote_tomek", "balance.smote_tomek.head_epochs=4", "trainer.max_epochs=30",
            "optimizer.lr=0.01", f"hydra.run.dir={run_dir}")
    log = pd.read_csv(run_dir / "logs" / "head" / "metrics.csv")
    lr = log["lr-AdamW"].dropna().tolist()  # logged at the start of every head epoch
    assert len(lr) == 4
    for epoch, value in enumerate(lr):  # cosine over the 4 head epochs, not over trainer.max_epochs=30
        assert value == pytest.approx(0.01 * (1 + math.cos(math.pi * epoch / 4)) / 2, rel=1e-6)


def test_resume_last_of_a_finetune_run_finds_its_stage_checkpoint(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    common = ["dataset=synthetic2018", "dataset.synthetic_n=30", "model=baseline", *TINY, "balance=smote_tomek",
              "balance.smote_tomek.finetune=true", "balance.smote_tomek.head_epochs=1", f"hydra.run.dir={run_dir}"]
    run_cli("train.py", *common, "trainer.max_epochs=1")
    assert (run_dir / "checkpoints" / "finetune" / "last.ckpt").is_file()
    run_cli("train.py", *common, "trainer.max_epochs=2", "ckpt_path=last")
    resumed = pd.read_csv(run_dir / "logs" / "resume_1" / "metrics.csv").dropna(subset=["val/bacc"])
    assert resumed["epoch"].tolist() == [1]  # continued from epoch 1, not from scratch
