"""Calibration: reliability bins and expected calibration error of the top-1 confidence, temperature scaling.

ECE: Naeini et al., AAAI 2015; Guo et al., "On calibration of modern neural networks", ICML 2017.
ECE depends on the number of bins.

Temperature scaling (Guo et al. 2017) fits one scalar ``T`` dividing the logits to minimise the
validation NLL; it changes confidences, never the predicted class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, logsumexp

# Temperatures searched by fit_temperature: far beyond any sensible calibration on both sides.
_LOG_T_BOUNDS = (math.log(1e-2), math.log(1e2))
# Floor of logits, standing in for log(0): below any finite log-probability of a float32 softmax.
_LOG_ZERO = math.log(np.finfo(np.float64).tiny)


def check_scores(probs: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 ``probs`` (N×K) and int64 ``labels`` (N,)."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if probs.ndim != 2 or len(probs) == 0:
        raise ValueError(f"expected a non-empty N×K array of scores, got shape {probs.shape}")
    if num_classes is not None and probs.shape[1] != num_classes:
        raise ValueError(f"{probs.shape[1]} score columns for {num_classes} classes")
    if labels.shape != (len(probs),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"expected {len(probs)} integer labels, got {labels.dtype} array of shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must lie in [0, {probs.shape[1]}), got [{labels.min()}, {labels.max()}]")
    return probs, labels.astype(np.int64)


@dataclass(frozen=True)
class Calibration:
    """Top-1 confidence binned into equal-width bins ``(edges[i], edges[i + 1]]``.

    ``accuracy`` and ``confidence`` are the bin means (NaN for empty bins); ``count`` the images.
    """

    edges: np.ndarray
    count: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: bin-count-weighted mean |accuracy − confidence|."""
        filled = self.count > 0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float((self.count[filled] * gaps).sum() / self.count.sum())


def calibration_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> Calibration:
    """Bin the top-1 confidence of ``probs`` (N×K) against correctness of the argmax.

    Args:
        probs: class probabilities, N×K.
        labels: true class indices, (N,).
        bins: number of equal-width bins over [0, 1].
    """
    probs, labels = check_scores(probs, labels)
    confidence = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # side="left" puts a confidence equal to an edge in the bin below it: bins are (lo, hi].
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(which, correct, minlength=bins) / count
        mean_confidence = np.bincount(which, confidence, minlength=bins) / count
    return Calibration(edges, count, accuracy, mean_confidence)


def _sanitise_logits(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    if np.isnan(logits).any() or np.isposinf(logits).any():
        raise ValueError("logits contain NaN or +inf")
    # log(probs) of a probability that underflowed to 0 is −inf: floor it at the log of the
    # smallest normal double so the NLL of an image whose true class got probability 0 is finite.
    return np.maximum(logits, _LOG_ZERO)


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    scaled = logits / temperature
    return float(np.mean(logsumexp(scaled, axis=1) - scaled[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature ``T`` minimising the NLL of ``softmax(logits / T)`` (Guo et al. 2017).

    Args:
        logits: N×K logits, or ``log(probs)`` (softmax is unchanged by a per-row shift).
        labels: true class indices, (N,).

    Returns:
        ``T`` > 0 (searched over [0.01, 100]; > 1 softens over-confident predictions).
    """
    logits = _sanitise_logits(logits)
    _, labels = check_scores(logits, labels)
    # NLL(β·z) is convex in β = 1/T, hence unimodal in log T: bounded Brent search is enough.
    result = minimize_scalar(lambda log_t: _nll(logits, labels, math.exp(log_t)), bounds=_LOG_T_BOUNDS,
                             method="bounded", options={"xatol": 1e-6})
    return math.exp(result.x)


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated probabilities ``softmax(logits / temperature)``, N×K float64."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return np.exp(log_softmax(_sanitise_logits(logits) / temperature, axis=1))
