"""The ISIC 2024 challenge's figures: partial AUC above 80 % TPR and the top-15-per-patient sensitivity."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from lesion.metrics import LesionMetrics, partial_auc, top_k_sensitivity


def via_mcclish(labels: np.ndarray, scores: np.ndarray, min_tpr: float = 0.8) -> float:
    """The same area by another route: scikit-learn's standardised partial AUC (McClish) of the flipped
    problem, converted back to the raw area."""
    max_fpr = 1 - min_tpr
    standardised = roc_auc_score(1 - labels, -scores, max_fpr=max_fpr)
    low, high = max_fpr ** 2 / 2, max_fpr
    return low + (2 * standardised - 1) * (high - low)


labelled_scores = st.integers(2, 300).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda y: 0 < sum(y) < len(y)),
    st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 1.0]) | st.floats(0, 1), min_size=n, max_size=n)))


@settings(max_examples=300, deadline=None)
@given(labelled_scores, st.sampled_from([0.8, 0.5, 0.9]))
def test_partial_auc_is_the_standardised_scikit_learn_area_converted_on_random_and_tied_scores(data, min_tpr):
    labels, scores = np.array(data[0]), np.array(data[1])
    assert math.isclose(partial_auc(labels, scores, min_tpr), via_mcclish(labels, scores, min_tpr), abs_tol=1e-12)


def test_partial_auc_spans_zero_to_0_2_with_random_scores_near_0_02():
    rng = np.random.default_rng(0)
    labels = (rng.random(200_000) < 0.05).astype(int)
    assert math.isclose(partial_auc(labels, labels.astype(float)), 0.2)  # perfect
    assert partial_auc(labels, -labels.astype(float)) == 0.0  # reversed
    assert abs(partial_auc(labels, rng.random(labels.size)) - 0.02) < 0.002
    assert math.isnan(partial_auc(np.zeros(5, int), rng.random(5)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 1), st.floats(0, 1)), min_size=1, max_size=80),
       st.integers(1, 20))
def test_top_k_sensitivity_counts_positives_within_their_patients_k_highest_scores(rows, k):
    patients, labels, scores = (np.array(column) for column in zip(*rows))
    found = top_k_sensitivity(labels, scores, patients, k)
    if not labels.any():
        assert math.isnan(found)
        return
    captured = 0
    for i in np.flatnonzero(labels):  # higher scores, or equal scores earlier, of the same patient
        same = patients == patients[i]
        ahead = (scores > scores[i]) | ((scores == scores[i]) & (np.arange(len(scores)) < i))
        captured += (same & ahead).sum() < k
    assert math.isclose(found, captured / labels.sum())


def test_two_class_metrics_report_the_partial_auc_of_the_second_class():
    rng = np.random.default_rng(1)
    target = torch.from_numpy((rng.random(500) < 0.2).astype(np.int64))
    positive = torch.from_numpy(rng.random(500)).float() * 0.7 + target * 0.3
    metrics = LesionMetrics(["benign", "malignant"])
    for chunk in range(0, 500, 64):  # batch by batch, as an epoch
        metrics.update(torch.stack([1 - positive, positive], 1)[chunk:chunk + 64], target[chunk:chunk + 64])
    figures = metrics.compute()
    assert math.isclose(figures["pauc80"], partial_auc(target.numpy(), positive.numpy()), abs_tol=1e-9)
    three = LesionMetrics(["a", "b", "c"])
    three.update(torch.eye(3), torch.arange(3))
    assert "pauc80" not in three.compute()
