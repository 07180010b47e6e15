"""Evaluation and training figures as PNG files: confusion matrix, ROC, reliability diagram, class
distribution, subgroup figures, training curves and augmented samples.

Figures are built as :class:`matplotlib.figure.Figure` objects drawn by the Agg canvas directly,
never through ``pyplot``: no global figure registry, no interactive backend, nothing to close, and
the process-wide backend choice is left alone. Each file is written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from lesion.evaluate.calibration import calibration_bins
from lesion.files import atomic_path

DPI = 110


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` × ``height`` inches on its own Agg canvas (no ``pyplot``)."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG to ``path``, atomically.

    Titles (each axes' and the figure's own texts, such as its suptitle) wrap between words where they
    would run past the figure's edge; the constrained layout makes room for their lines.
    """
    for text in [*(ax.title for ax in figure.axes), *figure.texts]:
        text.set_wrap(True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    return Path(path)


def _class_ticks(ax, classes: Sequence[str], axis: str) -> None:
    ticks = np.arange(len(classes))
    rotation = 45 if len(classes) > 4 else 0
    if axis == "x":
        ax.set_xticks(ticks, classes, rotation=rotation, ha="right" if rotation else "center")
    else:
        ax.set_yticks(ticks, classes)


def plot_confusion(confusion: list[list[int]], classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Counts and row-normalised confusion matrices side by side, every cell annotated.

    Args:
        confusion: K×K counts, rows = true class, columns = predicted class.
        classes: the K class names.
        path: PNG to write.
        title: figure title (default "Confusion matrix").
    """
    counts = np.asarray(confusion, dtype=np.int64)
    support = counts.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = counts / support  # NaN rows: classes absent from the split
    size = 2.5 + 0.6 * len(classes)
    figure = new_figure(2 * size + 1, size)
    panels = figure.subplots(1, 2)
    for ax, values, vmax, name, text in (
        (panels[0], counts, max(counts.max(), 1), "Counts", lambda v: f"{v:d}"),
        (panels[1], recall, 1, "Row-normalised (recall on the diagonal)",
         lambda v: "n/a" if math.isnan(v) else f"{v:.2f}"),
    ):
        shown = np.nan_to_num(values.astype(np.float64))
        figure.colorbar(ax.imshow(shown, cmap="Blues", vmin=0, vmax=vmax), ax=ax, shrink=0.8)
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, text(v), ha="center", va="center", fontsize=8,
                    color="white" if shown[i, j] > vmax / 2 else "black")
        _class_ticks(ax, classes, "x")
        _class_ticks(ax, classes, "y")
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
        ax.set_title(name)
    figure.suptitle(title or "Confusion matrix")
    return save_figure(figure, path)


# The class curves' line styles, cycled beside the 10 colours of the colour cycle: no two of up to 20
# curves share a colour and a style.
_ROC_STYLES = ("-", "--", ":", "-.")


def plot_roc(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], path: str | Path) -> Path:
    """One-vs-rest ROC curve per class, its AUC in the legend.

    Curves that coincide (a binary task's two curves mirror each other, and are one curve when its
    scores are symmetric) stay distinguishable: each class has its own colour and line style, and each curve is drawn thinner
    than the ones before it, which show around it. Classes without positives or without negatives
    have no curve; the legend says so.

    Args:
        probs: class probabilities, N×K.
        labels: true class indices, (N,).
        classes: the K class names.
        path: PNG to write.
    """
    probs, labels = np.asarray(probs), np.asarray(labels)
    figure = new_figure(6.5, 6)
    ax = figure.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    for k, name in enumerate(classes):
        positive = labels == k
        if positive.all() or not positive.any():
            reason = "no negatives" if positive.all() else "no positives"
            ax.plot([], [], linestyle="none", label=f"{name}: {reason}, skipped")
            continue
        fpr, tpr, _ = roc_curve(positive, probs[:, k])
        ax.plot(fpr, tpr, color=f"C{k % 10}", linestyle=_ROC_STYLES[k % len(_ROC_STYLES)],
                linewidth=3.0 - 1.8 * k / max(1, len(classes) - 1),
                label=f"{name} (AUC {roc_auc_score(positive, probs[:, k]):.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("False positive rate (1 − specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.set_title("ROC curves (one-vs-rest)")
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(figure, path)


def plot_reliability(probs: np.ndarray, labels: np.ndarray, path: str | Path, bins: int = 15,
                     ece: float | None = None) -> Path:
    """Reliability diagram of the top-1 confidence over a histogram of confidences.

    Args:
        probs: class probabilities, N×K.
        labels: true class indices, (N,).
        path: PNG to write.
        bins: equal-width confidence bins.
        ece: the ECE to print in the title (computed from the same bins when ``None``).
    """
    calibration = calibration_bins(probs, labels, bins)
    ece = calibration.ece if ece is None else ece
    edges = calibration.edges
    centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    filled = calibration.count > 0
    figure = new_figure(6, 7)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    accuracy, confidence = calibration.accuracy[filled], calibration.confidence[filled]
    top.bar(centres[filled], accuracy, width=width, edgecolor="black", linewidth=0.5, color="tab:blue",
            alpha=0.8, label="accuracy")
    # The red segment from each bar's top to its mean confidence is the bin's calibration gap.
    top.vlines(centres[filled], accuracy, confidence, color="tab:red", linewidth=2)
    top.plot(centres[filled], confidence, "o", color="tab:red", markersize=4, label="mean confidence (gap in red)")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("Accuracy")
    top.set_title(f"Reliability diagram (ECE {ece:.4f}, {bins} bins)")
    top.legend(loc="best", fontsize=8)
    bottom.bar(centres, calibration.count, width=width, edgecolor="black", linewidth=0.5, color="tab:grey")
    bottom.set_xlabel("Top-1 confidence")
    bottom.set_ylabel("Images")
    return save_figure(figure, path)


def plot_class_distribution(labels: np.ndarray, classes: Sequence[str], path: str | Path, title: str) -> Path:
    """Bar chart of images per class, the count on each bar.

    Args:
        labels: class indices, (N,).
        classes: the K class names.
        path: PNG to write.
        title: figure title (e.g. which split, before or after balancing).
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    figure = new_figure(1.5 + 0.8 * len(classes), 4.5)
    ax = figure.subplots()
    bars = ax.bar(np.arange(len(classes)), counts, color="tab:blue")
    ax.bar_label(bars, labels=[str(c) for c in counts], padding=2, fontsize=8)
    ax.margins(y=0.12)
    _class_ticks(ax, classes, "x")
    ax.set_xlabel("Class")
    ax.set_ylabel("Images")
    ax.set_title(title)
    return save_figure(figure, path)


def plot_subgroups(report: dict, figures: Mapping[str, str], path: str | Path) -> Path:
    """Figures of a subgroup report per group with their 95 % intervals: one panel per figure, one row per group
    (all images first, their value also as a dashed line). A group too small to report has its count, no point.

    Args:
        report: a :func:`lesion.evaluate.subgroups.subgroup_report`.
        figures: the figures to draw, name → title; those the report lacks are left out.
        path: PNG to write.
    """
    names = [name for name in figures if name in report["all"]]
    rows = [("all images", report["all"])] + [(f"{attribute['title']}: {group}", found)
                                              for attribute in report["attributes"].values()
                                              for group, found in attribute["groups"].items()]
    figure = new_figure(2.5 + 2.6 * len(names), 1.2 + 0.28 * len(rows))
    axes = figure.subplots(1, len(names), sharey=True, squeeze=False)[0]
    for ax, name in zip(axes, names):
        for row, (_, found) in enumerate(rows):
            value = found.get(name)
            if value is None or math.isnan(value):
                continue
            colour = "black" if row == 0 else "tab:blue"
            ax.hlines(row, *found[f"ci/{name}"], color=colour, linewidth=1.5)
            ax.plot(value, row, "o", color=colour, markersize=4)
        if not math.isnan(report["all"][name]):
            ax.axvline(report["all"][name], linestyle="--", color="grey", linewidth=1)
        ax.set_title(figures[name])
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(np.arange(len(rows)), [f"{label} (n={found['images']}{'' if len(found) > 1 else ', too few'})"
                                              for label, found in rows], fontsize=8)
    axes[0].set_ylim(len(rows) - 0.5, -0.5)  # all images at the top
    figure.suptitle("Figures per subgroup, with 95 % bootstrap intervals")
    return save_figure(figure, path)


def _per_epoch(table: pd.DataFrame, suffixes: Sequence[str]) -> dict[str, pd.Series]:
    """Last logged value per epoch of each train/val column named ``<stage>/<suffix>``."""
    curves = {}
    for column in table.columns:
        stage, _, name = column.partition("/")
        if stage in ("train", "val") and name in suffixes:
            values = table[["epoch", column]].dropna()
            if len(values):
                curves[column] = values.groupby("epoch")[column].last()
    return curves


def plot_training_curves(metrics_csv: str | Path, path: str | Path) -> Path | None:
    """Loss and BACC/macro-AUC per epoch from a Lightning ``CSVLogger`` ``metrics.csv``.

    Rows of that file are sparse (each holds the metrics logged at one step). Drawn: the last
    value per epoch of the ``train/`` and ``val/`` columns ``loss_epoch``, ``loss``, ``bacc`` and
    ``auc_macro``; step-level columns (``train/loss_step``) are left out.

    Args:
        metrics_csv: the logger's ``metrics.csv``.
        path: PNG to write.

    Returns:
        ``path``, or ``None`` (and no file) when the CSV holds no epoch-level metrics.
    """
    table = pd.read_csv(metrics_csv)
    if "epoch" not in table.columns:
        return None
    losses = _per_epoch(table, ("loss_epoch", "loss"))
    scores = _per_epoch(table, ("bacc", "auc_macro"))
    if not losses and not scores:
        return None
    figure = new_figure(11, 4.5)
    for ax, curves, ylabel, title in ((figure.add_subplot(1, 2, 1), losses, "Loss", "Loss"),
                                      (figure.add_subplot(1, 2, 2), scores, "Score", "Balanced accuracy and macro AUC")):
        for column, series in curves.items():
            ax.plot(series.index, series.to_numpy(), marker="o", markersize=3,
                    linestyle="--" if column.startswith("train/") else "-", label=column)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if curves:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    figure.suptitle("Training curves")
    return save_figure(figure, path)


def plot_augmented_samples(images: torch.Tensor, labels: Sequence[int] | np.ndarray | torch.Tensor,
                           classes: Sequence[str], mean: Sequence[float], std: Sequence[float],
                           path: str | Path, columns: int = 8) -> Path:
    """Grid of augmented training images, de-normalised, titled with their class.

    Args:
        images: normalised batch, B×3×H×W.
        labels: class index of each image, (B,).
        classes: the class names.
        mean, std: the normalisation the images went through (RGB, [0, 1] units).
        path: PNG to write.
        columns: images per row.
    """
    pixels = images.detach().float().cpu() * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    pixels = pixels.clamp(0, 1).permute(0, 2, 3, 1).numpy()
    labels = np.asarray(torch.as_tensor(labels).cpu())
    columns = max(1, min(columns, len(pixels)))
    rows = math.ceil(len(pixels) / columns)
    figure = new_figure(1.8 * columns, 1.9 * rows + 0.5)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, image, label in zip(axes, pixels, labels):
        ax.imshow(image)
        ax.set_title(classes[int(label)], fontsize=9)
    figure.suptitle("Augmented training samples")
    return save_figure(figure, path)
