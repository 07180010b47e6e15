"""Imbalance-aware epoch metrics: balanced accuracy, per-class recall/precision/F1/AUC, confusion.

All figures come from epoch-level state (a confusion matrix and the concatenated probabilities),
synchronised across DDP ranks by torchmetrics, never averaged per batch. A class with no
samples in the split (e.g. seborrheic keratosis in a set without any) has undefined recall and
AUC: they are reported as NaN and left out of BACC and macro AUC, as scikit-learn's
``balanced_accuracy_score`` does. Likewise a class nothing was predicted as has undefined
precision, and one with neither samples nor predictions undefined F1 (``2TP / (support +
predicted)``): NaN, as scikit-learn's ``zero_division=np.nan``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torchmetrics.classification import MulticlassAUROC, MulticlassConfusionMatrix
from torchmetrics.utilities import dim_zero_cat

# The ISIC 2024 challenge's partial AUC: above this true-positive rate.
MIN_TPR = 0.8


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> float:
    """``numerator / denominator``, NaN (undefined) when the denominator is 0."""
    return (numerator / denominator).item() if denominator > 0 else math.nan


def partial_auc(labels: np.ndarray, scores: np.ndarray, min_tpr: float = MIN_TPR) -> float:
    """Partial AUC above ``min_tpr`` true-positive rate, as the ISIC 2024 challenge's scorer computes it:
    labels and scores flipped, the ROC truncated at FPR = 1 − ``min_tpr`` with one interpolated point,
    trapezoidal area. Range [0, 1 − min_tpr]; random scores give (1 − min_tpr)² / 2 (0.02 at 80 %).

    Args:
        labels: 1 = positive (malignant), 0 = negative, per image.
        scores: the positive class's score per image (any monotone score: a probability, a rank).

    Returns:
        The area, NaN where ``labels`` hold one class only.
    """
    from sklearn.metrics import auc, roc_curve

    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    if len(np.unique(labels)) < 2:
        return math.nan
    max_fpr = 1 - min_tpr
    fpr, tpr, _ = roc_curve(1 - labels, -scores)
    stop = np.searchsorted(fpr, max_fpr, "right")
    tpr = np.append(tpr[:stop], np.interp(max_fpr, fpr[stop - 1:stop + 1], tpr[stop - 1:stop + 1]))
    fpr = np.append(fpr[:stop], max_fpr)
    return float(auc(fpr, tpr))


def top_k_sensitivity(labels: np.ndarray, scores: np.ndarray, patients: np.ndarray, k: int = 15) -> float:
    """The share of positive images that rank among their patient's ``k`` highest scores (the ISIC 2024
    challenge's secondary figure; ties broken by image order). NaN without positives."""
    import pandas as pd

    frame = pd.DataFrame({"label": np.asarray(labels), "score": np.asarray(scores, dtype=float),
                          "patient": np.asarray(patients)})
    positives = frame["label"] == 1
    if not positives.any():
        return math.nan
    rank = frame.groupby("patient")["score"].rank(method="first", ascending=False)
    return float((rank[positives] <= k).mean())


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


class LesionMetrics(nn.Module):
    """Metrics of one stage (train, val or test).

    Args:
        classes: class names in class order.
    """

    def __init__(self, classes: Sequence[str]):
        super().__init__()
        self.classes = list(classes)
        num_classes = len(self.classes)
        self.confusion = MulticlassConfusionMatrix(num_classes)
        self.auroc = MulticlassAUROC(num_classes, average=None)

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of class probabilities (B×K) and true class indices (B,)."""
        self.confusion.update(probs, target)
        self.auroc.update(probs, target)

    def reset(self) -> None:
        self.confusion.reset()
        self.auroc.reset()

    def compute(self) -> dict:
        """Epoch figures with the keys of ``test_metrics.json``.

        Returns:
            ``bacc``, ``accuracy``, ``auc_macro``, ``recall/<C>``, ``precision/<C>``, ``f1/<C>``,
            ``auc/<C>``, ``support/<C>`` (floats; NaN where undefined), ``confusion`` (rows =
            true class, columns = predicted) and ``classes``.
        """
        cm = self.confusion.compute().double().cpu()
        support = cm.sum(1)
        predicted = cm.sum(0)
        tp = cm.diag()
        present = support > 0
        # With no negatives or no positives a class's AUC is undefined.
        with warnings.catch_warnings():
            # torchmetrics warns about classes without positives; they become NaN below.
            warnings.filterwarnings("ignore", message="No positive samples in targets")
            auc = self.auroc.compute().double().cpu() if support.sum() > 0 else torch.zeros(len(self.classes))
        defined_auc = present & (support < support.sum())
        out: dict = {}
        recall, aucs = [], []
        for k, name in enumerate(self.classes):
            r = _ratio(tp[k], support[k])
            p = _ratio(tp[k], predicted[k])
            f1 = _ratio(2 * tp[k], support[k] + predicted[k])  # = 2pr / (p + r) where p and r are defined
            a = auc[k].item() if defined_auc[k] else math.nan
            out[f"recall/{name}"], out[f"precision/{name}"] = r, p
            out[f"f1/{name}"], out[f"auc/{name}"] = f1, a
            out[f"support/{name}"] = int(support[k])
            recall.append(r)
            aucs.append(a)
        total = support.sum().item()
        out["bacc"] = _nanmean(recall)
        out["accuracy"] = tp.sum().item() / total if total else math.nan
        out["auc_macro"] = _nanmean(aucs)
        if len(self.classes) == 2:
            with self.auroc.sync_context():  # the probabilities of every rank
                probs, target = dim_zero_cat(self.auroc.preds), dim_zero_cat(self.auroc.target)
            out["pauc80"] = partial_auc(target.cpu().numpy(), probs[:, 1].float().cpu().numpy())
        out["confusion"] = cm.long().tolist()
        out["classes"] = list(self.classes)
        return out
