"""Scale-out: DDP on two CPU processes (gloo), SMOTE-Tomek under DDP, one device per sweep job."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from lesion.data.datamodule import evaluation_sampler
from lesion.data.synthetic import split_counts
from lesion.errors import LesionError
from lesion.train.sweep import claimed_gpu
from lesion.balance.ranks import unshard
from lesion.train.sweep import devices_per_job

REPO = Path(__file__).resolve().parents[1]

SMALL = ["model.backbone=resnet18", "model.weights=none", "dataset.image_size=32", "dataset.batch_size=4",
         "dataset.num_workers=0", "dataset.synthetic_n=30"]


@pytest.mark.slow
def test_quickstart_trains_on_two_ddp_processes_with_the_same_metric_keys(run_cli, trained_run, tmp_path):
    run_dir = tmp_path / "run"
    run_cli("train.py", "experiment=quickstart", "trainer=ddp_cpu", *SMALL, "trainer.max_epochs=2",
            f"hydra.run.dir={run_dir}")
    assert (run_dir / "train_ddp_process_1.log").is_file()  # the second rank ran
    metrics = json.loads((run_dir / "test_metrics.json").read_text())
    single = json.loads((trained_run / "test_metrics.json").read_text())
    assert sorted(metrics) == sorted(single)
    # Metrics are synced over both ranks: every test image counted (30 × 1/3 = 10 images, even split).
    test_size = sum(split_counts("isic2018", 30)["test"].values())
    assert sum(map(sum, metrics["confusion"])) == test_size
    log = (run_dir / "logs" / "metrics.csv").read_text().splitlines()
    header = log[0].split(",")
    val_rows = [row.split(",") for row in log[1:] if row.split(",")[header.index("val/bacc")]]
    assert sorted(int(r[header.index("epoch")]) for r in val_rows) == [0, 1]  # each epoch logged once
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("balance", [["balance=none"], ["balance=smote_tomek", "balance.smote_tomek.head_epochs=1"]],
                         ids=["network", "smote-head-stage"])
def test_under_ddp_validation_and_test_count_every_image_once(run_cli, tmp_path, balance):
    """7 validation and 7 test images on 2 ranks, in batches of 3: rank 0 gets 4 images (2 batches),
    rank 1 gets 3 (1 batch). Lightning's own sampler would pad rank 1 with a repeated image. With
    SMOTE-Tomek, the head stage's validation (of embeddings) chooses ``best.ckpt``."""
    run_dir = tmp_path / "run"
    run_cli("train.py", "dataset=synthetic2018", "trainer=ddp_cpu", "model.backbone=resnet18", "model.weights=none",
            "dataset.image_size=32", "dataset.batch_size=3", "dataset.num_workers=0", "dataset.synthetic_n=21",
            "trainer.max_epochs=1", *balance, f"hydra.run.dir={run_dir}")
    sizes = {split: sum(counts.values()) for split, counts in split_counts("isic2018", 21).items()}
    assert sizes["val"] == sizes["test"] == 7
    best = run_dir / "checkpoints" / "best.ckpt"
    evaluated = {}
    for split in ("val", "test"):
        out = tmp_path / split
        run_cli("evaluate.py", f"ckpt={best}", f"split={split}", f"out={out}", "gradcam.n=0", "plots=false",
                "bootstrap=10", "num_workers=0")
        evaluated[split] = json.loads((out / "metrics.json").read_text())
    # The test metrics of the DDP run are those of one process on the same checkpoint, …
    tested = json.loads((run_dir / "test_metrics.json").read_text())
    assert sum(map(sum, tested["confusion"])) == sizes["test"]
    assert tested["confusion"] == evaluated["test"]["confusion"]
    assert tested["auc_macro"] == pytest.approx(evaluated["test"]["auc_macro"], abs=1e-6, nan_ok=True)
    # … and so are the validation metrics that chose the checkpoint.
    assert json.loads((run_dir / "val_metrics.json").read_text())["bacc"] == pytest.approx(
        evaluated["val"]["bacc"], abs=1e-6)
    last_stage = run_dir / "logs" / ("head" if "balance=smote_tomek" in balance else "") / "metrics.csv"
    logged = pd.read_csv(last_stage).dropna(subset=["val/bacc"]).iloc[-1]
    for key in ("bacc", "accuracy", "auc_macro"):
        assert logged[f"val/{key}"] == pytest.approx(evaluated["val"][key], abs=1e-6, nan_ok=True), key


@settings(max_examples=50, deadline=None)
@given(items=st.integers(1, 40), processes=st.integers(1, 8))
def test_evaluation_shares_hold_every_item_once(items, processes):
    def share(rank: int) -> list[int]:
        trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": processes, "rank": rank})
        sampler = evaluation_sampler(range(items), trainer)
        return list(range(items)) if sampler is None else list(sampler)

    if items < processes:
        with pytest.raises(LesionError, match="each needs one"):
            share(0)
        return
    shares = [share(rank) for rank in range(processes)]
    assert sorted(i for s in shares for i in s) == list(range(items))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # at most one batch more on some processes


@pytest.mark.slow
def test_smote_tomek_under_ddp_resamples_once_and_every_rank_trains_on_the_same_set(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    run_cli("train.py", "dataset=synthetic2018", "balance=smote_tomek", "trainer=ddp_cpu", *SMALL,
            "balance.smote_tomek.head_epochs=2", f"hydra.run.dir={run_dir}")
    pattern = re.compile(r"rank (\d)/2: the head trains on (\d+) resampled rows \(sha256 (\w+)\)")
    found = {}
    for log in (run_dir / "train.log", run_dir / "train_ddp_process_1.log"):
        found.update({int(m[1]): (int(m[2]), m[3]) for m in pattern.finditer(log.read_text())})
    assert sorted(found) == [0, 1] and found[0] == found[1]
    report = json.loads((run_dir / "balance.json").read_text())["smote_tomek"]
    assert sum(report["counts_before"].values()) == 30  # every training image embedded once across ranks
    assert sum(report["counts_after"].values()) == found[0][0]
    assert (run_dir / "test_metrics.json").is_file()


# Imported at start-up by every process (sitecustomize): resampling fails as a bad input would, on rank 0,
# the only rank that resamples. (Every option is checked before training, so no option reaches it.)
FAILING_RESAMPLING = """
import lesion.balance.smote
from lesion.errors import LesionError


def smote_tomek(*args, **kwargs):
    raise LesionError("balance.smote_tomek", "resampling failed", "this is the test's own failure")


lesion.balance.smote.smote_tomek = smote_tomek
"""


@pytest.mark.slow
def test_a_resampling_error_on_rank_0_stops_every_rank_with_one_line(run_cli, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAILING_RESAMPLING)
    path = os.pathsep.join([str(hook), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    result = run_cli("train.py", "dataset=synthetic2018", "balance=smote_tomek", "trainer=ddp_cpu", *SMALL,
                     f"hydra.run.dir={tmp_path / 'run'}", check=False, timeout=300, env={"PYTHONPATH": path})
    assert result.returncode == 2  # no rank left waiting for a broadcast (the timeout would fail the test)
    # Every rank stops, rank 0 alone says why: one line, not one per rank (nor two interleaved).
    errors = [line for line in result.stderr.splitlines() if "lesion: error:" in line]
    assert errors == ["lesion: error: balance.smote_tomek: resampling failed — this is the test's own failure"]
    assert not (tmp_path / "run" / "test_metrics.json").exists()


def test_ddp_inside_a_sweep_is_refused_before_training(run_cli, tmp_path):
    result = run_cli("train.py", "-m", "experiment=quickstart", "trainer=ddp_cpu", *SMALL, "seed=1,2",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "lesion: error: trainer.devices: a sweep (-m) runs one device per job, this one asks for 2 (strategy ddp) "
        "— sweep with trainer=gpu (one GPU per job; hydra/launcher=joblib runs one job per GPU at once), or train "
        "one configuration at a time with trainer=ddp")
    assert not list((tmp_path / "sweep").rglob("*.ckpt"))


@pytest.mark.parametrize("devices, expected", [(1, 1), (2, 2), ("3", 3), ([0, 1], 2), ("0,1", 2), ("1,", 1),
                                               (-1, 1), ("auto", 1)])
def test_devices_per_job(devices, expected):
    # No GPU here: -1 / auto on a GPU accelerator count the visible GPUs, at least one.
    assert devices_per_job(OmegaConf.create({"accelerator": "gpu", "devices": devices})) == expected


def test_unshard_restores_the_dataset_order():
    rows = np.arange(11)[:, None] * np.ones((1, 3))
    parts = [rows[rank::3] for rank in range(3)]
    assert np.array_equal(unshard(parts), rows)


HOLD = """
import sys, time
from pathlib import Path
from lesion.train.sweep import claimed_gpu
with claimed_gpu(Path(sys.argv[1]), 2, poll_s=0.1) as index:
    print(index, flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_concurrent_jobs_claim_different_gpus_and_wait_for_a_free_one(tmp_path):
    first = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "3"], stdout=subprocess.PIPE, text=True)
    assert first.stdout.readline().strip() == "0"
    with claimed_gpu(tmp_path, 2) as index:
        assert index == 1  # GPU 0 is held by the other job
        start = time.monotonic()
        third = subprocess.run([sys.executable, "-c", HOLD, str(tmp_path), "0"], capture_output=True, text=True)
        assert third.stdout.strip() == "0"  # got GPU 0 only once the first job ended
        assert time.monotonic() - start > 1.0 and first.wait() == 0
    with claimed_gpu(tmp_path, 2) as first_free, claimed_gpu(tmp_path, 2) as second_free:
        assert (first_free, second_free) == (0, 1)  # GPU 1 was released at the end of the block


@pytest.mark.slow
def test_joblib_launcher_runs_sweep_jobs_in_parallel_processes(run_cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="pip install -e '.[cluster]'")
    sweep = tmp_path / "sweep"
    run_cli("train.py", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "experiment=quickstart", *SMALL,
            "trainer.fast_dev_run=true", "seed=1,2", f"hydra.sweep.dir={sweep}")
    assert sorted(p.name for p in sweep.iterdir() if (p / "test_metrics.json").is_file()) == ["0", "1"]


def test_slurm_launcher_config_composes(run_cli):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[cluster]'")
    result = run_cli("train.py", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu",
                     "hydra.launcher.gpus_per_node=1", "hydra.launcher.tasks_per_node=1", "trainer=gpu", "--cfg", "hydra")
    launcher = result.stdout.split("  launcher:\n", 1)[1]
    assert "partition: gpu" in launcher and "gpus_per_node: 1" in launcher and "tasks_per_node: 1" in launcher
