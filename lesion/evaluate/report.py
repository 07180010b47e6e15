"""Evaluation report of one labelled split: point metrics, bootstrap intervals, calibration.

Point estimates come from :class:`lesion.metrics.LesionMetrics`, so a report agrees with the
``test_metrics.json`` of training. On top of them the report adds per-class specificity, the ISIC
2017 Part 3 ranking score (mean of the melanoma and seborrheic keratosis AUCs; Codella et al.,
"Skin lesion analysis toward melanoma detection", ISBI 2018), the expected calibration error of
the top-1 confidence (Naeini et al., AAAI 2015; Guo et al., "On calibration of modern neural
networks", ICML 2017) and 95 % percentile bootstrap intervals of BACC and macro AUC over resampled
images (Efron & Tibshirani 1993).

Caveats: the bootstrap resamples images only, so it ignores the variability of training (seeds,
splits); a class absent from a resample is left out of that resample's averages, as one absent
from the split is left out of the point estimate. ECE depends on the number of bins.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lesion.evaluate.calibration import calibration_bins, check_scores
from lesion.metrics import LesionMetrics, partial_auc, top_k_sensitivity

CI_LEVEL = 0.95
# Resampled images scored at once: about 8 MiB per float64 array of a block of resamples.
BOOTSTRAP_BLOCK_CELLS = 2**20


def _rowwise_nanmean(values: np.ndarray) -> np.ndarray:
    """Mean of the non-NaN entries of each row (NaN for a row without any)."""
    finite = ~np.isnan(values)
    n = finite.sum(1)
    total = np.where(finite, values, 0.0).sum(1)
    return np.divide(total, n, out=np.full(len(values), np.nan), where=n > 0)


def _ranking(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The order that sorts ``scores`` (N,) and where each group of tied scores starts in it."""
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    return order, np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])


def _weighted_auc(ranking: tuple[np.ndarray, np.ndarray], positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One-vs-rest AUC for each row of sample multiplicities (Mann–Whitney U, ties count ½).

    Args:
        ranking: :func:`_ranking` of the scores of the N images.
        positive: whether each image belongs to the class, (N,) bool.
        weights: how often each image is drawn in each resample, B×N.

    Returns:
        (B,) AUCs; NaN where a resample has no positives or no negatives.
    """
    order, starts = ranking
    w = weights[:, order]
    pos = positive[order]
    w_pos = np.add.reduceat(w * pos, starts, axis=1)
    w_neg = np.add.reduceat(w * ~pos, starts, axis=1)
    below = np.cumsum(w_neg, axis=1) - w_neg  # negatives with a strictly lower score
    u = (w_pos * (below + 0.5 * w_neg)).sum(1)
    n_pos, n_neg = w_pos.sum(1), w_neg.sum(1)
    defined = (n_pos > 0) & (n_neg > 0)
    return np.divide(u, n_pos * n_neg, out=np.full(len(w), np.nan), where=defined)


def percentile_interval(values: np.ndarray) -> list[float]:
    """The central ``CI_LEVEL`` percentile interval ``[lo, hi]`` of the non-NaN ``values`` (NaNs if none)."""
    finite = values[~np.isnan(values)]
    if len(finite) == 0:
        return [math.nan, math.nan]
    tail = 100 * (1 - CI_LEVEL) / 2
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return [float(lo), float(hi)]


def _resampled_figures(probs: np.ndarray, labels: np.ndarray, rankings: list[tuple[np.ndarray, np.ndarray]],
                       draws: np.ndarray) -> dict[str, np.ndarray]:
    """BACC, macro AUC (and with two classes the pAUC of the second) of each resample, a row of ``draws`` (B×N)."""
    b, n = draws.shape
    k = probs.shape[1]
    rows = np.arange(b)[:, None]
    # Confusion matrix of every resample at once: one bincount over (resample, true, predicted).
    cells = labels * k + probs.argmax(1)
    confusion = np.bincount((rows * k * k + cells[draws]).ravel(), minlength=b * k * k).reshape(b, k, k)
    support = confusion.sum(2)
    tp = np.diagonal(confusion, axis1=1, axis2=2)
    recall = np.divide(tp, support, out=np.full(support.shape, np.nan), where=support > 0)

    weights = np.bincount((rows * n + draws).ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
    aucs = np.stack([_weighted_auc(rankings[c], labels == c, weights) for c in range(k)], axis=1)
    figures = {"bacc": _rowwise_nanmean(recall), "auc_macro": _rowwise_nanmean(aucs)}
    if k == 2:
        positive = labels == 1
        figures["pauc80"] = np.array([partial_auc(positive[d], probs[d, 1]) for d in draws])
    return figures


def resample_blocks(n: int, n_bootstrap: int, seed: int, block: int | None = None):
    """The ``n_bootstrap`` resamples of ``n`` images (rows of image indices) drawn ``block`` at a time (default:
    ``BOOTSTRAP_BLOCK_CELLS`` // n), so memory grows with block × n, not ``n_bootstrap`` × n. The rows do not depend
    on the block: successive draws of ``Generator.integers`` continue one stream.

    Yields:
        block × n index arrays, ``n_bootstrap`` rows in all.
    """
    block = block or max(1, BOOTSTRAP_BLOCK_CELLS // n)
    rng = np.random.default_rng(seed)
    for start in range(0, n_bootstrap, block):
        yield rng.integers(0, n, size=(min(block, n_bootstrap - start), n))


def _bootstrap(probs: np.ndarray, labels: np.ndarray, n_bootstrap: int, seed: int, block: int | None = None) -> dict:
    """Percentile intervals of BACC, macro AUC (two classes: pAUC) over ``n_bootstrap`` resamples of the images,
    scored a block at a time (:func:`resample_blocks`)."""
    n, k = probs.shape
    rankings = [_ranking(probs[:, c]) for c in range(k)]
    blocks = [_resampled_figures(probs, labels, rankings, draws) for draws in resample_blocks(n, n_bootstrap, seed, block)]
    intervals = {f"ci/{name}": percentile_interval(np.concatenate([figures[name] for figures in blocks]))
                 for name in blocks[0]}
    return {**intervals, "n_bootstrap": n_bootstrap, "ci_level": CI_LEVEL, "seed": seed}


def evaluation_report(probs: np.ndarray, labels: np.ndarray, classes: list[str], n_bootstrap: int = 1000,
                      seed: int = 0, ece_bins: int = 15, patients: np.ndarray | None = None) -> dict:
    """All figures of one labelled split.

    Args:
        probs: class probabilities, N×K (rows of a softmax).
        labels: true class indices, (N,).
        classes: the K class names in column order.
        n_bootstrap: resamples of the images for the 95 % intervals (≥ 1).
        seed: seed of the resampling.
        ece_bins: equal-width confidence bins of the ECE.
        patients: each image's patient, where known: two classes then add ``top15``, the share of the second
            class's images among their patient's 15 highest scores (the ISIC 2024 challenge's secondary figure).

    Returns:
        The keys of :meth:`LesionMetrics.compute` plus ``specificity/<C>``, ``ece``, ``ci/bacc``
        and ``ci/auc_macro`` (``[lo, hi]``; two classes: also ``ci/pauc80``), ``n_bootstrap``, ``ci_level``, ``seed``, and
        ``challenge_score`` when the classes include MEL and SK. NaN where undefined.
    """
    probs, labels = check_scores(probs, labels, len(classes))
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be at least 1, got {n_bootstrap}")
    metrics = LesionMetrics(classes)
    metrics.update(torch.from_numpy(probs), torch.from_numpy(labels))
    report = metrics.compute()

    confusion = np.asarray(report["confusion"])
    negatives = len(labels) - confusion.sum(1)
    false_pos = confusion.sum(0) - np.diag(confusion)
    for c, name in enumerate(classes):
        # TN / (TN + FP) = 1 − FP / negatives
        report[f"specificity/{name}"] = 1 - false_pos[c] / negatives[c] if negatives[c] > 0 else math.nan
    if "MEL" in classes and "SK" in classes:
        report["challenge_score"] = (report["auc/MEL"] + report["auc/SK"]) / 2
    report["ece"] = calibration_bins(probs, labels, ece_bins).ece
    if patients is not None and len(classes) == 2:
        report["top15"] = top_k_sensitivity(labels, probs[:, 1], patients, k=15)
    report.update(_bootstrap(probs, labels, n_bootstrap, seed))
    return {k: float(v) if isinstance(v, np.floating) else v for k, v in report.items()}


def _fmt(value: float, digits: int = 4) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _fmt_ci(interval: list[float] | None) -> str:
    if not interval:
        return ""
    return f"  [{_fmt(interval[0])}, {_fmt(interval[1])}]"


def format_report(report: dict) -> str:
    """The human-readable ``metrics.txt`` of an :func:`evaluation_report`.

    Returns:
        A header (accuracy, BACC and macro AUC with their intervals, challenge score, ECE), a
        per-class table and the confusion matrix; undefined figures read ``n/a``.
    """
    classes = report["classes"]
    confusion = report["confusion"]
    level = report.get("ci_level", CI_LEVEL)
    lines = [f"Images: {sum(map(sum, confusion))}    classes: {', '.join(classes)}"]
    if "ci/bacc" in report:
        lines.append(f"Intervals: {level:.0%} bootstrap percentile, {report['n_bootstrap']} resamples, "
                     f"seed {report['seed']}")
    lines += ["",
              f"{'Accuracy':<20}{_fmt(report['accuracy'])}",
              f"{'Balanced accuracy':<20}{_fmt(report['bacc'])}{_fmt_ci(report.get('ci/bacc'))}",
              f"{'Macro AUC':<20}{_fmt(report['auc_macro'])}{_fmt_ci(report.get('ci/auc_macro'))}"]
    if "pauc80" in report:
        lines.append(f"{'pAUC above 80% TPR':<20}{_fmt(report['pauc80'])}{_fmt_ci(report.get('ci/pauc80'))}"
                     f"  (of {classes[1]}; range 0–0.2, random 0.02)")
    if "top15" in report:
        lines.append(f"{'top-15 per patient':<20}{_fmt(report['top15'])}  (share of the {classes[1]} images among "
                     "their patient's 15 highest scores)")
    if "challenge_score" in report:
        lines.append(f"{'Challenge score':<20}{_fmt(report['challenge_score'])}  (mean AUC of MEL and SK)")
    if "ece" in report:
        lines.append(f"{'ECE':<20}{_fmt(report['ece'])}")

    width = max(8, *(len(c) + 2 for c in classes))
    columns = ["support", "precision", "recall", "specificity", "F1", "AUC"]
    lines += ["", "Per class (recall = sensitivity)",
              f"{'class':<{width}}" + "".join(f"{c:>12}" for c in columns)]
    for name in classes:
        cells = [f"{report[f'support/{name}']:>12d}"]
        cells += [f"{_fmt(report.get(f'{key}/{name}', math.nan)):>12}"
                  for key in ("precision", "recall", "specificity", "f1", "auc")]
        lines.append(f"{name:<{width}}" + "".join(cells))

    cell = max(7, *(len(c) + 2 for c in classes), *(len(str(v)) + 2 for row in confusion for v in row))
    lines += ["", "Confusion matrix (rows: true class, columns: predicted class)",
              f"{'':<{width}}" + "".join(f"{c:>{cell}}" for c in classes)]
    for name, row in zip(classes, confusion):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines) + "\n"
