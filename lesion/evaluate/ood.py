"""Out-of-distribution detection: how unlike the training data an image is, and when to call it unknown.

Scores, higher for images less like the training data:

- ``msp``: one minus the maximum softmax probability (Hendrycks & Gimpel, "A baseline for
  detecting misclassified and out-of-distribution examples", ICLR 2017);
- ``energy``: the free energy of the logits, ``−T·logsumexp(logits / T)`` (Liu et al.,
  "Energy-based out-of-distribution detection", NeurIPS 2020).

:data:`SCORE` is the one lesion reports: ``energy`` (T = 1), computed in
:func:`lesion.evaluate.predict.predict_with_energy` from the logits that give the probabilities,
averaged over test-time views as they are; an ensemble's is the mean of its members'. On synthetic
data with held-out lesion types as the unknown (``benchmarks/ood.py``, 3 seeds) it told them from
the known types better than MSP did at every seed (detection AUROC 0.75 ± 0.03 against 0.69 ± 0.03;
FPR at 95 % TPR 0.57 against 0.82). An exported graph gives probabilities only, so no energy.

The threshold is fitted on a model's validation images (:func:`fit_threshold`): the smallest
score at or below which a stated share of them (the in-distribution recall, 95 %) lies. Images
scoring above it are flagged ``unknown``. Caveat: held-out lesion types of the same images are
*near* out-of-distribution, the hard case; a score flags what the model is unsure of, whether
the image is of a new kind or an ambiguous one of a known kind.

A flag can also be a prediction (:func:`predicted_as`): ISIC 2019 scores a class no training image
has, UNK ("none of the others"), and ``evaluate.py unknown_class=UNK`` predicts every flagged image
as that class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from fractions import Fraction

import numpy as np
from scipy.special import logsumexp
from scipy.stats import rankdata

SCORE = "energy"
DEFAULT_RECALL = 0.95
# Checkpoint entry holding the fitted threshold (OodThreshold.as_dict): plain numbers and the score's name.
CHECKPOINT_KEY = "ood"


def msp_score(probs: np.ndarray) -> np.ndarray:
    """``1 − max_k p_k`` of N×K class probabilities: (N,)."""
    return 1.0 - np.asarray(probs, dtype=np.float64).max(1)


def energy_score(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``−T·logsumexp(logits / T)`` of N×K logits: (N,)."""
    return -temperature * logsumexp(np.asarray(logits, dtype=np.float64) / temperature, axis=1)


def fit_threshold(scores: np.ndarray, recall: float = DEFAULT_RECALL) -> float:
    """The smallest of ``scores`` at or below which at least ``recall`` of them lie (ties count in full).

    Images scoring above it are called out-of-distribution, so at least ``recall`` of the images it
    is fitted on are called in-distribution.
    """
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    if not len(scores) or not 0 < recall <= 1:
        raise ValueError(f"need scores and a recall in (0, 1] (got {len(scores)} scores, recall {recall})")
    # Exact: k/n >= recall as written (0.95 is 19/20), with no rounding of recall·n.
    k = math.ceil(Fraction(str(recall)) * len(scores))
    return float(scores[k - 1])


def unknown(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Whether each image is out-of-distribution: its score above the threshold."""
    return np.asarray(scores) > threshold


def predicted_as(probs: np.ndarray, flags: np.ndarray, k: int) -> np.ndarray:
    """N×K ``probs`` with every flagged image predicted as class ``k``: its row 1 there and 0 elsewhere."""
    probs = np.array(probs, copy=True)
    probs[np.asarray(flags, dtype=bool)] = np.eye(probs.shape[1], dtype=probs.dtype)[k]
    return probs


def detection_auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the ROC curve of telling out-of-distribution images (positive) from in-distribution ones by score:
    the probability that an out-of-distribution image scores higher, ties counting a half (Mann–Whitney)."""
    n_in, n_out = len(in_scores), len(out_scores)
    ranks = rankdata(np.concatenate([in_scores, out_scores]))
    return float((ranks[n_in:].sum() - n_out * (n_out + 1) / 2) / (n_in * n_out))


def detection_report(in_scores: np.ndarray, out_scores: np.ndarray, recall: float = DEFAULT_RECALL) -> dict:
    """``ood/auroc`` (:func:`detection_auroc`) and ``ood/fpr95``: the share of out-of-distribution images called
    in-distribution at the threshold that calls ``recall`` (95 %) of the in-distribution ones so, with counts."""
    threshold = fit_threshold(in_scores, recall)
    return {"ood/score": SCORE, "ood/auroc": detection_auroc(in_scores, out_scores),
            "ood/fpr95": float(np.mean(~unknown(out_scores, threshold))),
            "ood/in_images": len(in_scores), "ood/out_images": len(out_scores)}


@dataclass(frozen=True)
class OodThreshold:
    """A model's fitted threshold, as its checkpoint stores it (:data:`CHECKPOINT_KEY`).

    Attributes:
        score: the score it thresholds (a name of :data:`SCORE`'s kind).
        threshold: images scoring above it are unknown.
        recall: the share of the validation images at or below it, as asked.
        images: how many validation images it was fitted on.
    """

    score: str
    threshold: float
    recall: float
    images: int

    @classmethod
    def fitted(cls, scores: np.ndarray, recall: float = DEFAULT_RECALL) -> OodThreshold:
        """The threshold of :data:`SCORE` fitted on validation ``scores``."""
        return cls(SCORE, fit_threshold(scores, recall), float(recall), len(scores))

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, stored: object) -> OodThreshold | None:
        """The threshold a checkpoint stores, or ``None`` when it stores none that applies (none, another
        score's, or values that are not plain finite numbers)."""
        if not isinstance(stored, Mapping) or stored.get("score") != SCORE:
            return None
        threshold, recall, images = stored.get("threshold"), stored.get("recall"), stored.get("images")
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (threshold, recall, images))
        if not numbers or not math.isfinite(threshold) or not 0 < recall <= 1 or images < 1:
            return None
        return cls(SCORE, float(threshold), float(recall), int(images))
