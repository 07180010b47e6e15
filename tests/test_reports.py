"""Evaluation report: figures agree with scikit-learn, intervals behave, temperature scaling works."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import log_softmax, softmax
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                             precision_score, recall_score, roc_auc_score)

from lesion.evaluate.calibration import apply_temperature, calibration_bins, fit_temperature
from lesion.evaluate.report import _bootstrap, _ranking, _weighted_auc, evaluation_report, format_report
from lesion.files import write_json
from lesion.metrics import partial_auc

ISIC2018 = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
ISIC2017 = ["NV", "SK", "MEL"]


def predictions(n: int, k: int, seed: int = 0, present: list[int] | None = None):
    """Informative, imperfect probabilities: softmax(noise + 1.5·onehot)."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(present if present is not None else k, size=n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += 1.5
    return softmax(logits, axis=1), labels


def ece_loop(probs, labels, bins):
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            total += inside.sum() / len(probs) * abs(correct[inside].mean() - confidence[inside].mean())
    return total


@pytest.mark.parametrize("classes", [ISIC2018, ISIC2017], ids=["isic2018", "isic2017"])
def test_agrees_with_sklearn(classes):
    probs, labels = predictions(600, len(classes))
    report = evaluation_report(probs, labels, classes, n_bootstrap=200)
    pred = probs.argmax(1)
    k = list(range(len(classes)))
    assert report["bacc"] == pytest.approx(balanced_accuracy_score(labels, pred), abs=1e-6)
    assert report["accuracy"] == pytest.approx(accuracy_score(labels, pred), abs=1e-6)
    precision = precision_score(labels, pred, labels=k, average=None, zero_division=0)
    recall = recall_score(labels, pred, labels=k, average=None, zero_division=0)
    f1 = f1_score(labels, pred, labels=k, average=None, zero_division=0)
    cm = confusion_matrix(labels, pred, labels=k)
    aucs = [roc_auc_score(labels == c, probs[:, c]) for c in k]
    for c, name in enumerate(classes):
        tn = cm.sum() - cm[c].sum() - cm[:, c].sum() + cm[c, c]
        fp = cm[:, c].sum() - cm[c, c]
        assert report[f"precision/{name}"] == pytest.approx(precision[c], abs=1e-6)
        assert report[f"recall/{name}"] == pytest.approx(recall[c], abs=1e-6)
        assert report[f"f1/{name}"] == pytest.approx(f1[c], abs=1e-6)
        assert report[f"specificity/{name}"] == pytest.approx(tn / (tn + fp), abs=1e-6)
        assert report[f"auc/{name}"] == pytest.approx(aucs[c], abs=1e-6)
        assert report[f"support/{name}"] == (labels == c).sum()
    assert report["auc_macro"] == pytest.approx(np.mean(aucs), abs=1e-6)
    assert report["auc_macro"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr"), abs=1e-6)
    assert report["confusion"] == cm.tolist()
    assert report["classes"] == classes
    assert report["ece"] == pytest.approx(ece_loop(probs, labels, 15), abs=1e-12)
    if classes == ISIC2017:
        expected = (aucs[classes.index("MEL")] + aucs[classes.index("SK")]) / 2
        assert report["challenge_score"] == pytest.approx(expected, abs=1e-6)
    else:
        assert "challenge_score" not in report
    assert (report["n_bootstrap"], report["ci_level"], report["seed"]) == (200, 0.95, 0)


@pytest.mark.parametrize("bins", [1, 10, 15])
def test_ece_matches_loop_with_edge_values(bins):
    probs, labels = predictions(300, 4, seed=3)
    # Confidences exactly on bin edges go to the bin below, as in the loop.
    probs[:4] = [[0.5, 0.5, 0, 0], [0.2, 0.2, 0.2, 0.4], [1.0, 0, 0, 0], [0.6, 0.2, 0.1, 0.1]]
    assert calibration_bins(probs, labels, bins).ece == pytest.approx(ece_loop(probs, labels, bins), abs=1e-12)


def test_weighted_auc_matches_sklearn_on_resamples_with_ties():
    probs, labels = predictions(400, 3, seed=1)
    scores = np.round(probs, 1)  # many ties
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(labels), size=(5, len(labels)))
    weights = np.stack([np.bincount(d, minlength=len(labels)) for d in draws]).astype(float)
    for c in range(3):
        aucs = _weighted_auc(_ranking(scores[:, c]), labels == c, weights)
        for b, d in enumerate(draws):
            assert aucs[b] == pytest.approx(roc_auc_score(labels[d] == c, scores[d, c]), abs=1e-9)
    no_positives = _weighted_auc(_ranking(scores[:, 0]), np.zeros(len(labels), bool), weights)
    assert np.isnan(no_positives).all()


def test_intervals_contain_estimate_are_seeded_and_shrink():
    probs, labels = predictions(500, 7)
    report = evaluation_report(probs, labels, ISIC2018, n_bootstrap=300, seed=1)
    for key in ("bacc", "auc_macro"):
        lo, hi = report[f"ci/{key}"]
        assert lo < report[key] < hi
    again = evaluation_report(probs, labels, ISIC2018, n_bootstrap=300, seed=1)
    other = evaluation_report(probs, labels, ISIC2018, n_bootstrap=300, seed=2)
    assert again["ci/bacc"] == report["ci/bacc"] and again["ci/auc_macro"] == report["ci/auc_macro"]
    assert other["ci/bacc"] != report["ci/bacc"]
    big = evaluation_report(*predictions(4000, 7), ISIC2018, n_bootstrap=300, seed=1)
    for key in ("ci/bacc", "ci/auc_macro"):
        assert np.diff(big[key])[0] < np.diff(report[key])[0]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 120), k=st.sampled_from([2, 3, 7]), n_bootstrap=st.integers(1, 40),
       block=st.integers(1, 45), seed=st.integers(0, 2**32 - 1))
def test_bootstrap_in_blocks_gives_the_intervals_of_one_block(n, k, n_bootstrap, block, seed):
    probs, labels = predictions(n, k, seed=seed % 1000)
    probs = np.round(probs, 2)  # ties
    whole = _bootstrap(probs, labels, n_bootstrap, seed, block=n_bootstrap)
    assert _bootstrap(probs, labels, n_bootstrap, seed, block=block) == whole
    assert set(whole) >= {"ci/bacc", "ci/auc_macro"} and ("ci/pauc80" in whole) == (k == 2)


def _peak_bytes(run) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_bootstrap_memory_does_not_grow_with_the_number_of_resamples():
    probs, labels = predictions(4000, 3)
    few = _peak_bytes(lambda: evaluation_report(probs, labels, ISIC2017, n_bootstrap=200))
    many = _peak_bytes(lambda: evaluation_report(probs, labels, ISIC2017, n_bootstrap=2000))
    assert many < 1.5 * few, f"peak {many / 2**20:.0f} MiB for 2000 resamples vs {few / 2**20:.0f} MiB for 200"


def test_two_class_reports_give_the_partial_auc_with_its_interval_and_print_it():
    probs, labels = predictions(800, 2, seed=4)
    report = evaluation_report(probs, labels, ["benign", "malignant"], n_bootstrap=200, seed=1)
    lo, hi = report["ci/pauc80"]
    assert 0 <= lo < report["pauc80"] < hi <= 0.2
    assert report["pauc80"] == pytest.approx(partial_auc(labels == 1, probs[:, 1]), abs=1e-12)
    text = format_report(report)
    assert f"pAUC above 80% TPR  {report['pauc80']:.4f}  [{lo:.4f}, {hi:.4f}]  (of malignant" in text
    assert "ci/pauc80" not in evaluation_report(*predictions(300, 3), ISIC2017, n_bootstrap=20)


def test_default_bootstrap_is_1000_resamples():
    probs, labels = predictions(100, 3)
    report = evaluation_report(probs, labels, ISIC2017)
    assert report["n_bootstrap"] == 1000


def test_absent_class_is_nan_and_left_out():
    # No DF (index 5) in the split.
    probs, labels = predictions(500, 7, present=[0, 1, 2, 3, 4, 6])
    report = evaluation_report(probs, labels, ISIC2018, n_bootstrap=200)
    assert math.isnan(report["recall/DF"]) and math.isnan(report["auc/DF"])
    assert report["support/DF"] == 0
    predicted_df = (probs.argmax(1) == 5).sum()
    # Predicted but absent: precision 0 / predicted and F1 2·0 / (0 + predicted) are 0, as in scikit-learn.
    assert predicted_df > 0 and report["precision/DF"] == 0 and report["f1/DF"] == 0
    assert not math.isnan(report["specificity/DF"])  # every image is a negative
    pred = probs.argmax(1)
    with pytest.warns(UserWarning):  # sklearn warns about the empty class, then leaves it out
        expected_bacc = balanced_accuracy_score(labels, pred)
    assert report["bacc"] == pytest.approx(expected_bacc, abs=1e-6)
    present = [c for c in range(7) if c != 5]
    expected_auc = np.mean([roc_auc_score(labels == c, probs[:, c]) for c in present])
    assert report["auc_macro"] == pytest.approx(expected_auc, abs=1e-6)
    assert all(np.isfinite(report["ci/bacc"])) and all(np.isfinite(report["ci/auc_macro"]))


def test_challenge_score_nan_without_sk():
    probs, labels = predictions(300, 3, present=[0, 2])
    report = evaluation_report(probs, labels, ISIC2017, n_bootstrap=50)
    assert math.isnan(report["auc/SK"]) and math.isnan(report["challenge_score"])


def test_format_report_lists_classes_and_nan():
    probs, labels = predictions(300, 3, present=[0, 2])
    report = evaluation_report(probs, labels, ISIC2017, n_bootstrap=50)
    text = format_report(report)
    rows = [line.split() for line in text.splitlines()]
    for c, name in enumerate(ISIC2017):
        # the per-class row (support first) and the confusion row (the counts)
        assert [name, str(report[f"support/{name}"])] in [row[:2] for row in rows]
        assert [name, *map(str, report["confusion"][c])] in rows
    assert "n/a" in text
    assert "Challenge score" in text and "ECE" in text
    assert f"{report['bacc']:.4f}" in text and f"{report['ci/bacc'][0]:.4f}" in text


def test_precision_of_a_class_nothing_was_predicted_as_is_undefined_in_json_and_text(tmp_path):
    labels = np.array([0] * 6 + [2] * 4)  # NV and MEL; no SK
    probs = np.tile([0.7, 0.1, 0.2], (10, 1))
    probs[6:] = [0.5, 0.1, 0.4]  # every image predicted NV
    report = evaluation_report(probs, labels, ISIC2017, n_bootstrap=10)
    stored = json.loads(write_json(tmp_path / "metrics.json", report).read_text())
    # MEL: 4 images, none predicted (precision 0/0); SK: no images, none predicted (all 0/0).
    assert [stored[f"{key}/MEL"] for key in ("precision", "recall", "f1")] == [None, 0, 0]
    assert [stored[f"{key}/SK"] for key in ("precision", "recall", "f1")] == [None, None, None]
    assert stored["precision/NV"] == pytest.approx(0.6)
    per_class = {}
    for line in format_report(report).splitlines():  # the per-class rows come before the confusion rows
        per_class.setdefault(line.split()[0] if line.strip() else "", line.split()[1:])
    columns = ["support", "precision", "recall", "specificity", "F1", "AUC"]
    assert dict(zip(columns, per_class["MEL"])) | {"AUC": None} == {
        "support": "4", "precision": "n/a", "recall": "0.0000", "specificity": "1.0000", "F1": "0.0000", "AUC": None}
    assert per_class["SK"] == ["0", "n/a", "n/a", "1.0000", "n/a", "n/a"]


def test_fit_temperature_recovers_known_temperature():
    rng = np.random.default_rng(0)
    n, k, t_true = 4000, 7, 2.5
    logits = rng.normal(scale=4.0, size=(n, k))
    probs = softmax(logits / t_true, axis=1)
    labels = (probs.cumsum(1) > rng.random((n, 1))).argmax(1)  # y ~ softmax(z / T_true)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(t_true, abs=0.3)

    def nll(p):
        return -np.log(p[np.arange(n), labels]).mean()

    assert nll(apply_temperature(logits, t)) < nll(apply_temperature(logits, 1.0))
    # log-probabilities give the same temperature, zeros (−inf) included.
    log_probs = log_softmax(logits, axis=1)
    assert fit_temperature(log_probs, labels) == pytest.approx(t, rel=1e-4)
    log_probs[0, (labels[0] + 1) % k] = -np.inf
    assert np.isfinite(fit_temperature(log_probs, labels))
    calibrated = apply_temperature(log_probs, t)
    assert np.allclose(calibrated.sum(1), 1) and (calibrated.argmax(1) == logits.argmax(1)).all()


def test_rejects_mismatched_inputs():
    probs, labels = predictions(50, 3)
    with pytest.raises(ValueError, match="3 score columns for 7 classes"):
        evaluation_report(probs, labels, ISIC2018)
    with pytest.raises(ValueError, match="labels must lie"):
        evaluation_report(probs, labels + 1, ISIC2017)
