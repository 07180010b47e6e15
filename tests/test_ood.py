"""Out-of-distribution scores: detection figures against scikit-learn, the fitted threshold's recall, the threshold
in the checkpoint, predictions.csv's columns, old checkpoints, refused ood_images, the demo's flag."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from sklearn.metrics import roc_auc_score, roc_curve

from lesion.checkpoint import store_entry
from lesion.demo.classify import PageModel
from lesion.demo.page import UNKNOWN_WARNING, _summary
from lesion.evaluate.ood import (
    CHECKPOINT_KEY,
    SCORE,
    OodThreshold,
    detection_report,
    fit_threshold,
)
from lesion.train.module import LesionClassifier
from lesion.train.run import compose_classifier

REPO = Path(__file__).resolve().parents[1]

# Scores drawn from few values, so that ties are common.
SCORES = st.lists(st.integers(-5, 5).map(lambda k: k / 4), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(SCORES, SCORES.filter(lambda s: len(s) > 0))
def test_detection_auroc_and_fpr95_agree_with_sklearn(in_scores, out_scores):
    report = detection_report(np.array(in_scores), np.array(out_scores))
    scores, is_out = np.array(in_scores + out_scores), np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    if len(set(is_out)) == 2:
        assert report["ood/auroc"] == pytest.approx(roc_auc_score(is_out, scores), abs=1e-12)
    # FPR at 95 % TPR, the in-distribution images the positives (low score = in-distribution).
    fpr, tpr, _ = roc_curve(1 - is_out, -scores, drop_intermediate=False)
    assert report["ood/fpr95"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(SCORES, st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.99, 1.0]))
def test_threshold_calls_at_least_the_stated_recall_in_distribution_and_is_the_tightest(scores, recall):
    scores = np.array(scores)
    threshold = fit_threshold(scores, recall)
    assert np.mean(scores <= threshold) >= recall
    below = scores[scores < threshold]
    assert len(below) == 0 or np.mean(scores <= below.max()) < recall  # no smaller score would do


def tiny_module() -> LesionClassifier:
    return compose_classifier(REPO / "conf", ["dataset=synthetic2018", "model=baseline", "model.backbone=resnet18",
                                              "model.weights=none", "dataset.image_size=32"])


def saved(module: LesionClassifier, path: Path) -> Path:
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def test_the_stored_threshold_survives_save_and_load(tmp_path):
    path = saved(tiny_module(), tmp_path / "best.ckpt")
    assert LesionClassifier.load_from_checkpoint(path).ood_threshold is None  # written before thresholds
    fitted = OodThreshold.fitted(np.random.default_rng(0).normal(size=50))
    store_entry(path, CHECKPOINT_KEY, fitted.as_dict())
    assert LesionClassifier.load_from_checkpoint(path).ood_threshold == fitted
    assert torch.load(path, weights_only=True)[CHECKPOINT_KEY] == fitted.as_dict()  # plain data


@pytest.mark.parametrize("stored", [{"score": "msp", "threshold": 0.5, "recall": 0.95, "images": 9},
                                    {"score": SCORE, "threshold": float("nan"), "recall": 0.95, "images": 9},
                                    {"score": SCORE, "threshold": "os.system", "recall": 0.95, "images": 9},
                                    "energy", None])
def test_a_stored_entry_that_is_not_a_threshold_of_the_score_gives_none(stored):
    assert OodThreshold.from_dict(stored) is None


def noise(path: Path, seed: int) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("threshold, flagged", [(-1e9, True), (1e9, False), (None, None)])
def test_the_page_warns_about_an_upload_its_threshold_flags(tmp_path, threshold, flagged):
    module = tiny_module().eval()
    if threshold is not None:
        module.ood_threshold = OodThreshold(SCORE, threshold, 0.95, 10)
    model = PageModel(module, "tiny")
    [result] = model.classify([noise(tmp_path / "noise.png", 0)])
    assert result.unknown is flagged
    assert (UNKNOWN_WARNING in _summary([result], model.classes)) is bool(flagged)


@pytest.fixture(scope="module")
def old_checkpoint(trained_run, tmp_path_factory) -> Path:
    """The session's trained run's best checkpoint without its threshold, as an older lesion wrote it."""
    contents = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)
    assert CHECKPOINT_KEY in contents
    del contents[CHECKPOINT_KEY]
    path = tmp_path_factory.mktemp("old") / "best.ckpt"
    torch.save(contents, path)
    return path


@pytest.mark.slow
def test_evaluate_writes_scores_flags_and_the_detection_figures(trained_run, run_cli, tmp_path):
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    folder = tmp_path / "noise"
    folder.mkdir()
    for k in range(5):
        noise(folder / f"n{k}.png", k)
    out = tmp_path / "out"
    run_cli("evaluate.py", f"ckpt={ckpt}", f"ood_images={folder}", "gradcam.n=0", "plots=false", "bootstrap=10",
            "num_workers=0", f"out={out}")
    table = pd.read_csv(out / "predictions.csv")
    assert list(table.columns)[-2:] == ["ood_score", "unknown"]
    threshold = LesionClassifier.load_from_checkpoint(ckpt).ood_threshold
    assert threshold is not None and threshold.score == SCORE
    assert (table["unknown"] == (table["ood_score"] > threshold.threshold)).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ood/threshold"] == threshold.threshold and metrics["ood/out_images"] == 5
    assert 0 <= metrics["ood/auroc"] <= 1 and 0 <= metrics["ood/fpr95"] <= 1
    assert "detection AUROC" in (out / "metrics.txt").read_text()
    folder_out = tmp_path / "folder"
    run_cli("evaluate.py", f"ckpt={ckpt}", f"images={folder}", "gradcam.n=0", "num_workers=0", f"out={folder_out}")
    folder_table = pd.read_csv(folder_out / "predictions.csv")
    assert (folder_table["unknown"] == (folder_table["ood_score"] > threshold.threshold)).all()


@pytest.mark.slow
def test_an_old_checkpoint_without_a_threshold_still_evaluates_with_empty_flags(old_checkpoint, run_cli, tmp_path):
    out = tmp_path / "out"
    result = run_cli("evaluate.py", f"ckpt={old_checkpoint}", "gradcam.n=0", "plots=false", "bootstrap=10",
                     "num_workers=0", f"out={out}")
    table = pd.read_csv(out / "predictions.csv")
    assert table["unknown"].isna().all() and table["ood_score"].notna().all()
    assert (result.stdout + result.stderr).count("stores no out-of-distribution threshold") == 1
    assert json.loads((out / "metrics.json").read_text())["ood/threshold"] is None


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_a_missing_or_empty_ood_images_folder_is_refused_before_anything_is_written(trained_run, run_cli, tmp_path,
                                                                                       make):
    folder = tmp_path / "ood"
    if make == "empty":
        folder.mkdir()
        (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result = run_cli("evaluate.py", f"ckpt={trained_run / 'checkpoints' / 'best.ckpt'}", f"ood_images={folder}",
                     "num_workers=0", f"out={out}", check=False)
    assert result.returncode == 2, result.stderr[-600:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"lesion: error: ood_images: {folder}: ") and " — pass ood_images=" in last
    assert "Traceback" not in result.stderr and not out.exists()
