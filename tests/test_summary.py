"""Sweep summary over a hand-written multirun folder: grouping by seed, mean ± std, order by validation
BACC, failures, files."""

from __future__ import annotations

import copy
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from lesion.files import write_json
from lesion.evaluate.summary import TOP_K, _balancing, ensemble_commands, main, markdown, summarize

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
    "model": {"name": "barata", "backbone": "resnet50", "weights": "imagenet", "dropout": 0.5},
    "loss": {"name": "ce", "weight": None},
    "optimizer": {"name": "adamw", "lr": 1e-4, "weight_decay": 1e-4},
    "scheduler": {"name": "cosine"},
    "trainer": {"_target_": "pytorch_lightning.Trainer", "max_epochs": 30, "accelerator": "cpu"},
    "balance": {"name": "none", "downsample": {"class": None, "fraction": 0.5, "to": None},
                "augment": {"target": None}, "class_weight": None, "sampler": False,
                "smote_tomek": {"enabled": False, "finetune": False, "backbone_ckpt": None, "head_epochs": 30,
                                "k_neighbors": 5, "search_dims": 128, "views": 1,
                                "cache_dir": "${oc.env:LESION_CACHE,'~/.cache/lesion'}/embeddings"}},
    "run_dir": "${hydra:runtime.output_dir}",
}
FOCAL = {"name": "focal", "gamma": 2.0, "alpha": None}
SMOTE = {"enabled": True}
KILLED = "killed"
OOM = "CUDA out of memory. Tried to allocate 2.00 GiB"
NO_DATA = "dataset.root: ISIC2018_Task3_Training_Input not found — place the official folders there"

# (experiment option, config changes, loss option, {seed: (test BACC, validation BACC) | error text | KILLED});
# job numbers in order. Validation ranks G9.1, focal, G9.2; the test BACC would rank G9.2, focal, G9.1.
SETTINGS = [
    ("g9_1", {"name": "G9.1", "balance": {"name": "hybrid", "downsample": {"class": "NV"},
                                          "smote_tomek": SMOTE}}, "ce", {1: (0.70, 0.80), 2: (0.74, 0.78),
                                                                          3: (0.69, 0.79)}),
    ("g9_2", {"name": "G9.2", "balance": {"name": "hybrid", "downsample": {"class": "NV", "to": "MEL"},
                                          "smote_tomek": SMOTE}}, "ce", {1: (0.76, 0.70), 2: NO_DATA}),
    ("g9_3", {"name": "G9.3", "balance": {"name": "hybrid", "augment": {"target": 0.5},
                                          "downsample": {"class": "NV"}, "smote_tomek": SMOTE}},
     "ce", {1: KILLED}),
    (None, {"loss": FOCAL, "optimizer": {"lr": 1e-5}}, "focal", {1: (0.72, 0.74)}),
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
    """One Hydra job folder; returns the test metrics written, if any, with ``val_bacc`` added.

    ``outcome``: ``(test BACC, validation BACC)``, a test BACC alone (a run older than
    ``val_metrics.json``), an error text or :data:`KILLED`.
    """
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
    if isinstance(outcome, (float, tuple)):
        bacc, val_bacc = outcome if isinstance(outcome, tuple) else (outcome, None)
        metrics = fake_metrics(bacc, int(job_dir.name))
        write_json(job_dir / "test_metrics.json", metrics)
        if val_bacc is not None:
            write_json(job_dir / "val_metrics.json", {"bacc": val_bacc, "epoch": 7})
        return {**metrics, "val_bacc": val_bacc}
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


def test_one_row_per_setting_best_validation_first_failed_last(sweep):
    root, _ = sweep
    frame = summarize(root)
    assert list(frame["experiment"]) == ["G9.1", FOCAL_ID, "G9.2", "G9.3", "G8.1"]
    assert list(frame["seeds"]) == [3, 1, 1, 0, 0]
    assert list(frame["seed"]) == ["1, 2, 3", "1", "1, 2", "1", "1"]
    assert list(frame["run_dir"]) == ["0, 1, 2", "6", "3, 4", "5", "7"]
    assert list(frame["status"]) == ["ok", "ok", "1 of 2 failed: seed 2: " + NO_DATA,
                                     "no test_metrics.json (job did not finish)", OOM]
    assert frame["val_bacc_mean"].iloc[:3].is_monotonic_decreasing
    assert frame["bacc_mean"].iloc[:3].is_monotonic_increasing  # test BACC disagrees: it must not rank
    assert frame[["val_bacc_mean", "bacc_mean", "auc_macro_mean"]].iloc[3:].isna().all().all()


def test_mean_and_sample_std_over_seeds(sweep):
    root, finished = sweep
    frame = summarize(root)
    assert [c for c in frame.columns if c.startswith("recall/") and c.endswith("_mean")] == \
        [f"recall/{name}_mean" for name in CLASSES]
    for experiment, runs in finished.items():
        got = row(frame, experiment)
        for metric in ["val_bacc", "bacc", "auc_macro", *(f"recall/{name}" for name in CLASSES if name != "DF")]:
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
    assert diff["G9.1"] == {"loss.name=ce", "optimizer.lr=0.0001", "balance.name=hybrid",
                            "balance.downsample.class=NV", "balance.smote_tomek.enabled=true"}
    assert diff[FOCAL_ID] == {"loss.name=focal", "loss.gamma=2.0", "optimizer.lr=1e-05", "balance.name=none",
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
    assert header[:5] == ["experiment", "seeds", "val BACC", "BACC", "AUC"]
    g91 = dict(zip(header, cells[0]))
    bacc = np.array([run["bacc"] for run in finished["G9.1"]])
    val_bacc = np.array([run["val_bacc"] for run in finished["G9.1"]])
    assert g91["BACC"] == f"{bacc.mean():.3f} ± {bacc.std(ddof=1):.3f}"
    assert g91["val BACC"] == f"{val_bacc.mean():.3f} ± {val_bacc.std(ddof=1):.3f}"
    assert g91["recall/DF"] == "n/a" and g91["seeds"] == "3" and g91["status"] == "ok"
    focal = dict(zip(header, cells[1]))  # one seed: no ±
    assert focal["BACC"] == f"{finished[FOCAL_ID][0]['bacc']:.3f}"
    assert focal["val BACC"] == f"{finished[FOCAL_ID][0]['val_bacc']:.3f}"
    oom = dict(zip(header, cells[4]))
    assert oom["val BACC"] == oom["BACC"] == "" and oom["status"] == OOM


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


def test_runs_without_validation_metrics_come_after_in_test_order(tmp_path):
    """Older runs (no val_metrics.json) follow the validated ones, by test BACC, failed last; validation
    ties keep the job order, whatever their test BACC."""
    root = tmp_path / "sweep"
    outcomes = {"old": 0.80, "tied": (0.60, 0.70), "best": (0.65, 0.72), "tied later": (0.90, 0.70),
                "old better": 0.85, "failed": OOM}
    for job, (name, outcome) in enumerate(outcomes.items()):
        write_job(root / str(job), merged(BASE, {"name": name}), {"loss": "ce"}, [f"name={name}"], outcome)
    frame = summarize(root)
    assert list(frame["experiment"]) == ["best", "tied", "tied later", "old better", "old", "failed"]
    assert frame["val_bacc_mean"].tolist()[:3] == [0.72, 0.70, 0.70]
    assert frame[["val_bacc_mean", "val_bacc_std"]].iloc[3:].isna().all().all()

    lines = markdown(frame).splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    cells = {r["experiment"]: r for r in (dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
                                          for line in lines[2:])}
    assert cells["best"]["val BACC"] == "0.720" and cells["old"]["val BACC"] == ""
    assert cells["old"]["BACC"] == "0.800"


@pytest.mark.parametrize("loss, choices, text", [
    ({"name": "focal", "gamma": 2.0, "alpha": None}, {}, "focal gamma=2.0"),
    ({"name": "weighted_ce", "weight": "inverse_frequency"}, {"loss": "weighted_ce"}, "weighted_ce"),
    ({"_target_": "lesion.losses.FocalLoss", "gamma": 2.0, "alpha": None}, {}, "FocalLoss gamma=2.0"),
    ({"_target_": "lesion.losses.WeightedCrossEntropy", "weight": None}, {"loss": "ce"}, "ce"),
])
def test_loss_name_from_the_config_or_an_older_configs_target(tmp_path, loss, choices, text):
    """``loss.name`` as saved in the run's config; older configs: the loss option, else the class name."""
    write_job(tmp_path / "sweep" / "0", {**BASE, "loss": loss}, choices, [], 0.7)
    assert summarize(tmp_path / "sweep").loc[0, "loss"] == text


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


# --- configs compared as the runs resolved them; seeds counted as draws; ensembles of distinct runs ---------

SYNTHETIC_ROOT = "${oc.env:LESION_CACHE,'~/.cache/lesion'}/synthetic${.year}-n${.synthetic_n}-s${.synthetic_seed}"


def interpolating(year: int, image_size: int, dated: bool) -> dict:
    """A config whose values come from interpolations, as conf/dataset/synthetic*.yaml and train.yaml write them."""
    return merged(BASE, {
        "dataset": {"year": year, "synthetic_n": 60, "synthetic_seed": 0, "root": SYNTHETIC_ROOT,
                    "image_size": image_size, "cache_dir": "${oc.env:LESION_CACHE,'~/.cache/lesion'}/images"},
        "model": {"input_size": "${dataset.image_size}", "label": "resnet-${dataset.image_size}px"},
        "callbacks": {"best": {"dirpath": "${run_dir}/checkpoints"}},
        **({"stamp": "${now:%Y-%m-%d}"} if dated else {}),
    })


@settings(max_examples=15, deadline=None)
@given(settings_=st.lists(st.tuples(st.sampled_from([2017, 2018]), st.sampled_from([32, 64]), st.booleans()),
                          min_size=2, max_size=4, unique_by=lambda s: s[:2]))
def test_config_diff_shows_the_runs_values_never_an_interpolation(settings_):
    """References resolve to the run's values (the same text resolving differently is a difference), an
    environment variable reads $NAME, and a key nothing recorded can resolve is left out, and said so."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "sweep"
        for job, (year, size, dated) in enumerate(settings_):
            write_job(root / str(job), {**interpolating(year, size, dated), "name": f"s{job}"}, {}, [], (0.6, 0.7))
        frame = summarize(root)
        diffs = frame.set_index("experiment")["config_diff"].map(lambda text: dict(p.split("=", 1) for p in
                                                                                   text.split(", ") if p))
        table = markdown(frame)
    assert len(frame) == len(settings_)
    assert "${" not in table and not frame["config_diff"].str.contains("${", regex=False).any()
    years, sizes = {s[0] for s in settings_}, {s[1] for s in settings_}
    for job, (year, size, dated) in enumerate(settings_):
        diff = diffs[f"s{job}"]
        assert ("model.input_size" in diff) == (len(sizes) > 1) == ("model.label" in diff)
        if len(sizes) > 1:
            assert diff["model.input_size"] == str(size) and diff["model.label"] == f"resnet-{size}px"
        if len(years) > 1:
            assert diff["dataset.root"] == f"$LESION_CACHE/synthetic{year}-n60-s0"
        assert "stamp" not in diff and "callbacks.best.dirpath" not in diff  # made from the run's own folder
    assert frame.attrs["unresolved"] == (["stamp"] if any(s[2] for s in settings_) else [])
    assert ("leaves out what the runs' records cannot resolve: stamp" in table) == any(s[2] for s in settings_)


def ensemble_members(root: Path) -> list[list[Path]]:
    """The job folders of each ``ckpt=[…]`` ensemble that ``ensemble_commands`` proposes."""
    found = []
    for command in ensemble_commands(root):
        (listed,) = re.findall(r"'ckpt=\[(.*)\]'", command)
        found.append([Path(p).parent.parent for p in listed.split(",")])
    return found


@settings(max_examples=25, deadline=None)
@given(seeds=st.lists(st.one_of(st.none(), st.integers(0, 2)), min_size=1, max_size=6),
       scores=st.lists(st.floats(0.3, 0.9), min_size=6, max_size=6))
def test_seeds_are_distinct_draws_and_ensembles_have_distinct_members(seeds, scores):
    """Runs of one setting repeating a seed are one draw: counted once, averaged before the spread, and
    never two members of one ensemble. An unseeded run is a draw of its own."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "sweep"
        for job, (seed, score) in enumerate(zip(seeds, scores)):
            write_job(root / str(job), {**interpolating(2018, 32, False), "name": "G1.1", "seed": seed}, {},
                      [f"seed={seed}"], (score, score + 0.05))
            (root / str(job) / "checkpoints").mkdir()
            (root / str(job) / "checkpoints" / "best.ckpt").write_bytes(b"")
        (row,) = summarize(root).to_dict("records")
        table = markdown(summarize(root))
        members = ensemble_members(root)
    draws: dict = {}
    for job, (seed, score) in enumerate(zip(seeds, scores)):
        draws.setdefault(("job", job) if seed is None else seed, []).append(score)
    per_draw = np.array([np.mean(values) for values in draws.values()])
    assert row["seeds"] == len(draws) and row["runs"] == len(seeds)
    assert row["bacc_mean"] == pytest.approx(per_draw.mean(), abs=1e-12)
    if len(draws) > 1:
        assert row["bacc_std"] == pytest.approx(per_draw.std(ddof=1), abs=1e-12)
    else:
        assert math.isnan(row["bacc_std"]) and "±" not in table.splitlines()[2]
    seeds_cell = table.splitlines()[2].split("|")[2].strip()
    assert seeds_cell == (str(len(draws)) if len(draws) == len(seeds)
                          else f"{len(seeds)} runs, {len(draws)} seed{'s' if len(draws) > 1 else ''}")
    for ensemble in members:
        picked = [seeds[int(job.name)] for job in ensemble]
        assert len(ensemble) >= 2 and all(s is None or picked.count(s) == 1 for s in picked), picked
    assert len(members) == (1 if len(draws) >= 2 else 0)
    assert all(len(ensemble) == min(TOP_K, len(draws)) for ensemble in members)
