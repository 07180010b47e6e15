"""Sweep summary over a hand-written multirun folder: grouping by seed, mean ± std, order, failures, files."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from lesion.files import write_json
from lesion.summary import _balancing, main, summarize

CLASSES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]  # DF is absent from the test split
OFFSETS = [0.10, -0.20, 0.05, 0.05, -0.05, None, 0.05]  # per-class recall around the BACC

# A composed conf/train.yaml, saved unresolved as Hydra does.
BASE = {
    "name": None,
    "seed": 1,
    "ckpt_path": None,
    "patience": 10,
    "dataset": {"_target_": "lesion.data.datamodule.IsicDataModule", "layout": "isic2018",
                "root": "${oc.env:LESION_DATA,data}/isic2018", "image_size": 224, "batch_size": 32},
    "model": {"_target_": "lesion.models.net.barata_net", "_partial_": True, "backbone": "resnet50",
              "weights": "imagenet", "dropout": 0.5},
    "loss": {"_target_": "lesion.losses.WeightedCrossEntropy", "weight": None},
    "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-4, "weight_decay": 1e-4},
    "scheduler": {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "_partial_": True,
                  "T_max": "${trainer.max_epochs}"},
    "trainer": {"_target_": "pytorch_lightning.Trainer", "max_epochs": 30, "accelerator": "cpu"},
    "balance": {"name": "none", "downsample": {"class": None, "fraction": 0.5, "to": None},
                "augment": {"target": None}, "class_weight": None, "sampler": False,
                "smote_tomek": {"enabled": False, "finetune": False, "backbone_ckpt": None, "head_epochs": 30,
                                "k_neighbors": 5, "search_dims": 128, "views": 1,
                                "cache_dir": "${oc.env:LESION_CACHE,'~/.cache/lesion'}/embeddings"}},
    "run_dir": "${hydra:runtime.output_dir}",
}
FOCAL = {"_target_": "lesion.losses.FocalLoss", "gamma": 2.0, "alpha": None}
SMOTE = {"enabled": True}
KILLED = "killed"
OOM = "CUDA out of memory. Tried to allocate 2.00 GiB"
NO_DATA = "dataset.root: ISIC2018_Task3_Training_Input not found — place the official folders there"

# (experiment option, config changes, loss option, {seed: BACC | error text | KILLED}); job numbers in order.
SETTINGS = [
    ("g9_1", {"name": "G9.1", "balance": {"name": "hybrid", "downsample": {"class": "NV"},
                                          "smote_tomek": SMOTE}}, "ce", {1: 0.70, 2: 0.74, 3: 0.69}),
    ("g9_2", {"name": "G9.2", "balance": {"name": "hybrid", "downsample": {"class": "NV", "to": "MEL"},
                                          "smote_tomek": SMOTE}}, "ce", {1: 0.76, 2: NO_DATA}),
    ("g9_3", {"name": "G9.3", "balance": {"name": "hybrid", "augment": {"target": 0.5},
                                          "downsample": {"class": "NV"}, "smote_tomek": SMOTE}},
     "ce", {1: KILLED}),
    (None, {"loss": FOCAL, "optimizer": {"lr": 1e-5}}, "focal", {1: 0.72}),
    ("g8_1", {"name": "G8.1", "balance": {"name": "class_weight", "class_weight": "inverse_frequency"}},
     "ce", {1: OOM}),
]
FOCAL_ID = "loss=focal optimizer.lr=1e-05"


def merged(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def fake_metrics(bacc: float, job: int) -> dict:
    """Per-class recall whose mean over the present classes is exactly ``bacc``."""
    jitter = np.random.default_rng(job).normal(0, 0.02, len(CLASSES) - 1)
    jitter -= jitter.mean()
    present = iter(jitter)
    recall = [None if offset is None else bacc + offset + next(present) for offset in OFFSETS]
    metrics = {"bacc": bacc, "accuracy": bacc + 0.1, "auc_macro": bacc + 0.15 + 0.01 * job, "classes": CLASSES,
               "confusion": [[0] * len(CLASSES) for _ in CLASSES]}
    for name, value in zip(CLASSES, recall):
        metrics.update({f"recall/{name}": value, f"precision/{name}": value, f"f1/{name}": value,
                        f"auc/{name}": None if value is None else min(value + 0.1, 1.0),
                        f"support/{name}": 0 if value is None else 20})
    return metrics



def write_job(job_dir: Path, config: dict, choices: dict, overrides: list[str], outcome) -> dict | None:
    """One Hydra job folder; returns the test metrics written, if any."""
    hydra_dir = job_dir / ".hydra"
    hydra_dir.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(config), hydra_dir / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), hydra_dir / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {
        "mode": "MULTIRUN", "overrides": {"hydra": ["hydra.mode=MULTIRUN"], "task": overrides},
        "job": {"name": "train", "num": int(job_dir.name)},
        "runtime": {"version": "1.3.8", "output_dir": str(job_dir), "choices": choices}}}),
        hydra_dir / "hydra.yaml")
    (job_dir / "train.log").write_text("")
    if isinstance(outcome, float):
        metrics = fake_metrics(outcome, int(job_dir.name))
        write_json(job_dir / "test_metrics.json", metrics)
        return metrics
    if outcome != KILLED:
        (job_dir / "error.txt").write_text(outcome + "\n")
    return None


@pytest.fixture
def sweep(tmp_path) -> tuple[Path, dict[str, list[dict]]]:
    """A multirun folder of 5 settings, 8 jobs; returns it and the finished metrics per experiment id."""
    root = tmp_path / "multirun" / "train" / "2026-11-30_10-00-00_000000"
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
    finished: dict[str, list[dict]] = {}
    job = 0
    for experiment, changes, loss, outcomes in SETTINGS:
        config = merged(BASE, changes)
        choices = {"dataset": "isic2018", "model": "barata", "loss": loss, "trainer": "cpu",
                   "balance": config["balance"]["name"], "experiment": experiment, "hydra/launcher": "basic"}
        for seed, outcome in outcomes.items():
            overrides = ([f"experiment={experiment}"] if experiment else [f"loss={loss}", "optimizer.lr=1e-05"])
            metrics = write_job(root / str(job), {**config, "seed": seed}, choices, [*overrides, f"seed={seed}"],
                                outcome)
            if metrics is not None:
                finished.setdefault(config["name"] or FOCAL_ID, []).append(metrics)
            job += 1
    return root, finished


def row(frame: pd.DataFrame, experiment: str) -> pd.Series:
    (index,) = frame.index[frame["experiment"] == experiment]
    return frame.loc[index]


def test_one_row_per_setting_best_first_failed_last(sweep):
    root, _ = sweep
    frame = summarize(root)
    assert list(frame["experiment"]) == ["G9.2", FOCAL_ID, "G9.1", "G9.3", "G8.1"]
    assert list(frame["seeds"]) == [1, 1, 3, 0, 0]
    assert list(frame["seed"]) == ["1, 2", "1", "1, 2, 3", "1", "1"]
    assert list(frame["run_dir"]) == ["3, 4", "6", "0, 1, 2", "5", "7"]
    assert list(frame["status"]) == ["1 of 2 failed: seed 2: " + NO_DATA, "ok", "ok",
                                     "no test_metrics.json (job did not finish)", OOM]
    assert frame["bacc_mean"].iloc[:3].is_monotonic_decreasing
    assert frame[["bacc_mean", "auc_macro_mean"]].iloc[3:].isna().all().all()


def test_mean_and_sample_std_over_seeds(sweep):
    root, finished = sweep
    frame = summarize(root)
    assert [c for c in frame.columns if c.startswith("recall/") and c.endswith("_mean")] == \
        [f"recall/{name}_mean" for name in CLASSES]
    for experiment, runs in finished.items():
        got = row(frame, experiment)
        for metric in ["bacc", "auc_macro", *(f"recall/{name}" for name in CLASSES if name != "DF")]:
            values = np.array([run[metric] for run in runs])
            assert got[f"{metric}_mean"] == pytest.approx(values.mean(), abs=1e-12)
            if len(values) > 1:
                assert got[f"{metric}_std"] == pytest.approx(values.std(ddof=1), abs=1e-12)
            else:
                assert math.isnan(got[f"{metric}_std"])
        assert math.isnan(got["recall/DF_mean"]) and math.isnan(got["recall/DF_std"])


def test_settings_columns(sweep):
    root, _ = sweep
    frame = summarize(root).set_index("experiment")
    assert frame["balancing"].to_dict() == {
        "G9.2": "downsample NV→MEL + SMOTE-Tomek",
        FOCAL_ID: "none",
        "G9.1": "downsample NV→50% + SMOTE-Tomek",
        "G9.3": "augment 0.5 + downsample NV→50% + SMOTE-Tomek",
        "G8.1": "class weights (inverse frequency)",
    }
    assert frame.loc[FOCAL_ID, "loss"] == "focal gamma=2.0" and frame.loc["G9.1", "loss"] == "ce"
    assert frame["batch"].tolist() == [32] * 5
    assert frame.loc[FOCAL_ID, "lr"] == 1e-5 and frame.loc["G9.1", "lr"] == 1e-4


def test_config_diff_lists_only_keys_that_differ(sweep):
    root, _ = sweep
    diff = summarize(root).set_index("experiment")["config_diff"].map(lambda text: set(text.split(", ")))
    assert diff["G9.1"] == {"loss._target_=WeightedCrossEntropy", "optimizer.lr=0.0001", "balance.name=hybrid",
                            "balance.downsample.class=NV", "balance.smote_tomek.enabled=true"}
    assert diff[FOCAL_ID] == {"loss._target_=FocalLoss", "loss.gamma=2.0", "optimizer.lr=1e-05", "balance.name=none",
                              "balance.smote_tomek.enabled=false"}
    assert "balance.downsample.to=MEL" in diff["G9.2"] and "balance.augment.target=0.5" in diff["G9.3"]
    assert "balance.class_weight=inverse_frequency" in diff["G8.1"]
    keys = {part.split("=")[0] for parts in diff for part in parts}
    assert not keys & {"seed", "run_dir", "name", "dataset.batch_size", "model.backbone", "balance.downsample.fraction"}


def test_cli_writes_markdown_and_csv(sweep, tmp_path):
    root, finished = sweep
    out = tmp_path / "report"
    main([str(root), "--out", str(out)])
    frame = summarize(root)

    table = pd.read_csv(out / "summary.csv", dtype=str, keep_default_na=False)
    assert list(table.columns) == list(frame.columns)
    for column in frame.columns:
        if pd.api.types.is_float_dtype(frame[column]):
            np.testing.assert_array_equal(table[column].replace("", "nan").astype(float), frame[column])
        else:
            assert table[column].tolist() == frame[column].astype(str).tolist(), column

    lines = (out / "summary.md").read_text().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert len(cells) == len(frame) and [r[0] for r in cells] == list(frame["experiment"])
    g91 = dict(zip(header, cells[2]))
    bacc = np.array([run["bacc"] for run in finished["G9.1"]])
    assert g91["BACC"] == f"{bacc.mean():.3f} ± {bacc.std(ddof=1):.3f}"
    assert g91["recall/DF"] == "n/a" and g91["seeds"] == "3" and g91["status"] == "ok"
    assert dict(zip(header, cells[1]))["BACC"] == f"{finished[FOCAL_ID][0]['bacc']:.3f}"  # one seed: no ±
    assert dict(zip(header, cells[4]))["BACC"] == "" and dict(zip(header, cells[4]))["status"] == OOM


def test_cli_subprocess_default_out(sweep):
    root, _ = sweep
    result = subprocess.run([sys.executable, "-m", "lesion.summary", str(root)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (root / "summary.md").read_text()
    assert (root / "summary.csv").is_file()


@pytest.mark.parametrize("make", ["empty", "missing"])
def test_bad_folder_is_one_error_line(tmp_path, make):
    folder = tmp_path / "sweep"
    if make == "empty":
        (folder / "0").mkdir(parents=True)
    result = subprocess.run([sys.executable, "-m", "lesion.summary", str(folder)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lesion: error: {folder}: ") and " — " in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (folder / "summary.md").exists()


def test_nested_jobs_natural_order_and_stale_error(tmp_path):
    """Jobs found at any depth, 10 after 9, an evaluate output inside a run is no run, newer file wins."""
    root = tmp_path / "sweep"
    config = merged(BASE, {"name": "G6.1"})
    choices = {"loss": "ce", "experiment": "g6_1"}
    for seed, job in [(1, "a/9"), (2, "a/10")]:
        write_job(root / job, {**config, "seed": seed}, choices, ["experiment=g6_1", f"seed={seed}"], 0.6 + seed / 100)
    write_job(root / "a/10/eval/0", {"ckpt": "x.ckpt", "split": "test"}, {}, ["ckpt=x.ckpt"], KILLED)
    stale = root / "a/9/error.txt"
    stale.write_text("Traceback (most recent call last):\nRuntimeError: interrupted\n")
    metrics = root / "a/9/test_metrics.json"
    os.utime(stale, (metrics.stat().st_mtime - 60,) * 2)  # failed, then resumed to success

    frame = summarize(root)
    assert len(frame) == 1
    assert frame.loc[0, "run_dir"] == "a/9, a/10" and frame.loc[0, "seeds"] == 2
    assert frame.loc[0, "status"] == "ok" and frame.loc[0, "config_diff"] == ""

    os.utime(stale, (metrics.stat().st_mtime + 60,) * 2)  # failed after the test metrics were written
    assert summarize(root).loc[0, "status"] == "1 of 2 failed: seed 1: RuntimeError: interrupted"


@pytest.mark.parametrize("balance, text", [
    (None, "none"),
    ({"downsample": None, "augment": None, "class_weight": None, "sampler": False, "smote_tomek": None}, "none"),
    ({"downsample": {"class": "NV", "fraction": 0.25}, "augment": {"target": 0.5}, "smote_tomek": {}},
     "augment 0.5 + downsample NV→25% + SMOTE-Tomek"),
    ({"downsample": {"class": "NV", "fraction": 0.5, "to": "MEL"}, "sampler": True},
     "downsample NV→MEL + weighted sampler"),
    ({"class_weight": "effective_number", "smote_tomek": {"enabled": False}}, "class weights (effective number)"),
])
def test_balancing_description(balance, text):
    """Both a null block and an unset switch (conf/balance/none.yaml) mean the step is off."""
    assert _balancing(balance) == text
