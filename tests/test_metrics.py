"""Epoch metrics agree with scikit-learn; absent classes are NaN and left out of averages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (balanced_accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support,
                             precision_score, recall_score, roc_auc_score)

from lesion.metrics import LesionMetrics

CLASSES = ["MEL", "NV", "BCC", "AKIEC"]


def random_predictions(n: int, labels_from: list[int], seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.choice(labels_from, size=n)
    logits = rng.normal(size=(n, len(CLASSES)))
    logits[np.arange(n), y] += 1.0  # better than chance, not perfect
    probs = torch.tensor(logits).softmax(1).float()
    return probs, torch.tensor(y)


def compute_in_batches(probs, y, batch=7):
    metrics = LesionMetrics(CLASSES)
    for start in range(0, len(y), batch):
        metrics.update(probs[start:start + batch], y[start:start + batch])
    return metrics.compute()


def test_agrees_with_sklearn():
    probs, y = random_predictions(200, [0, 1, 2, 3])
    out = compute_in_batches(probs, y)
    pred = probs.argmax(1).numpy()
    labels = list(range(len(CLASSES)))
    assert out["bacc"] == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-6)
    assert out["accuracy"] == pytest.approx((pred == y.numpy()).mean(), abs=1e-6)
    assert out["auc_macro"] == pytest.approx(roc_auc_score(y, probs.numpy(), multi_class="ovr", labels=labels), abs=1e-5)
    recall = recall_score(y, pred, average=None, labels=labels)
    precision = precision_score(y, pred, average=None, labels=labels, zero_division=0)
    f1 = f1_score(y, pred, average=None, labels=labels, zero_division=0)
    for k, name in enumerate(CLASSES):
        assert out[f"recall/{name}"] == pytest.approx(recall[k], abs=1e-6)
        assert out[f"precision/{name}"] == pytest.approx(precision[k], abs=1e-6)
        assert out[f"f1/{name}"] == pytest.approx(f1[k], abs=1e-6)
        auc = roc_auc_score((y.numpy() == k).astype(int), probs[:, k].numpy())
        assert out[f"auc/{name}"] == pytest.approx(auc, abs=1e-5)
    assert out["confusion"] == confusion_matrix(y, pred, labels=labels).tolist()
    assert out["classes"] == CLASSES


def test_class_without_samples_is_nan_and_excluded():
    probs, y = random_predictions(120, [0, 1, 3], seed=1)  # no BCC at all
    out = compute_in_batches(probs, y)
    assert math.isnan(out["recall/BCC"]) and math.isnan(out["auc/BCC"])
    assert out["support/BCC"] == 0
    pred = probs.argmax(1).numpy()
    present = [0, 1, 3]
    expected_bacc = np.mean([((pred == k) & (y.numpy() == k)).sum() / (y.numpy() == k).sum() for k in present])
    assert out["bacc"] == pytest.approx(expected_bacc, abs=1e-6)
    aucs = [roc_auc_score((y.numpy() == k).astype(int), probs[:, k].numpy()) for k in present]
    assert out["auc_macro"] == pytest.approx(np.mean(aucs), abs=1e-5)
    assert math.isfinite(out["auc/MEL"])


CLASS = st.integers(0, len(CLASSES) - 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(CLASS, CLASS), min_size=1, max_size=40))
def test_precision_recall_f1_are_undefined_exactly_at_zero_denominators(pairs):
    y, pred = np.array(pairs).T
    metrics = LesionMetrics(CLASSES)
    metrics.update(torch.nn.functional.one_hot(torch.from_numpy(pred), len(CLASSES)).float(), torch.from_numpy(y))
    out = metrics.compute()
    labels = list(range(len(CLASSES)))
    expected = precision_recall_fscore_support(y, pred, labels=labels, zero_division=np.nan)
    for k, name in enumerate(CLASSES):
        support, predicted = (y == k).sum(), (pred == k).sum()
        denominators = {"precision": predicted, "recall": support, "f1": support + predicted}  # F1 = 2TP / (S + P)
        for key, sklearn_values in zip(("precision", "recall", "f1"), expected):
            value = out[f"{key}/{name}"]
            assert math.isnan(value) == (denominators[key] == 0), (key, name, value)
            if denominators[key]:
                assert value == pytest.approx(sklearn_values[k], abs=1e-9), (key, name)
