"""Figures of the exploratory data analysis report, as PNG files.

Class counts per split, source image sizes, colour per class, images per lesion, sample images
and near-duplicate pairs. Drawn as in :mod:`lesion.evaluate.plots`: a
:class:`matplotlib.figure.Figure` on the Agg canvas, never ``pyplot``, each file written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from lesion.eda.statistics import CHANNELS, Colour, Groups
from lesion.evaluate.plots import new_figure, save_figure

_SPLIT_COLOURS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}
_CHANNEL_COLOURS = ("tab:red", "tab:green", "tab:blue")


def _class_ticks(ax, classes: Sequence[str]) -> None:
    rotation = 45 if len(classes) > 4 else 0
    ax.set_xticks(np.arange(len(classes)), classes, rotation=rotation, ha="right" if rotation else "center")


def plot_split_counts(counts: Mapping[str, Mapping[str, int]], path: str | Path, title: str) -> Path:
    """Grouped bars: images per class, one bar per split, the count on each bar.

    Args:
        counts: ``{split: {class: images}}``, classes in the same order for every split.
        path: PNG to write.
        title: figure title.
    """
    splits = list(counts)
    classes = list(next(iter(counts.values())))
    width = 0.8 / len(splits)
    figure = new_figure(2 + 0.5 * len(classes) * len(splits), 4.8)
    ax = figure.subplots()
    for k, split in enumerate(splits):
        values = [counts[split][c] for c in classes]
        bars = ax.bar(np.arange(len(classes)) + (k - (len(splits) - 1) / 2) * width, values, width,
                      label=split, color=_SPLIT_COLOURS.get(split))
        ax.bar_label(bars, labels=[str(v) for v in values], padding=2, fontsize=7)
    ax.margins(y=0.12)
    _class_ticks(ax, classes)
    ax.set_xlabel("Class")
    ax.set_ylabel("Images")
    ax.set_title(title)
    ax.legend(title="split")
    return save_figure(figure, path)


def plot_sizes(sizes: Mapping[str, np.ndarray], path: str | Path) -> Path:
    """Source image sizes per split: width against height, and the aspect-ratio histogram.

    Args:
        sizes: ``{split: N×2 (width, height)}``.
        path: PNG to write.
    """
    figure = new_figure(11, 4.5)
    scatter, histogram = figure.subplots(1, 2)
    ratios = np.concatenate([s[:, 0] / np.maximum(s[:, 1], 1) for s in sizes.values()])
    low, high = (ratios.min(), ratios.max()) if len(ratios) else (1.0, 1.0)
    edges = np.linspace(low - 0.05, high + 0.05, 31)
    for split, size in sizes.items():
        colour = _SPLIT_COLOURS.get(split)
        # Many collections have a few distinct sizes: the marker area shows how many images share one.
        distinct, count = np.unique(size, axis=0, return_counts=True)
        scatter.scatter(distinct[:, 0], distinct[:, 1], s=12 + 60 * np.sqrt(count / count.max()), alpha=0.5,
                        color=colour, label=f"{split} ({len(size)} images, {len(distinct)} sizes)")
        histogram.hist(size[:, 0] / np.maximum(size[:, 1], 1), bins=edges, histtype="step", linewidth=1.5,
                       color=colour, label=split)
    scatter.set_xlabel("Width (px)")
    scatter.set_ylabel("Height (px)")
    scatter.set_title("Source image sizes (marker area: images of that size)")
    scatter.legend(fontsize=8)
    histogram.set_xlabel("Aspect ratio (width / height)")
    histogram.set_ylabel("Images")
    histogram.set_title("Aspect ratios")
    histogram.legend(fontsize=8)
    figure.suptitle("Source images")
    return save_figure(figure, path)


def plot_colour(colours: Mapping[str, Colour], path: str | Path, size: int) -> Path:
    """Mean R, G, B per class with one pixel standard deviation as error bars.

    Args:
        colours: ``{class: Colour}``.
        path: PNG to write.
        size: side of the cached squares the statistics come from (for the title).
    """
    classes = list(colours)
    figure = new_figure(2 + 0.9 * len(classes), 4.8)
    ax = figure.subplots()
    x = np.arange(len(classes))
    for c, (name, colour) in enumerate(zip(CHANNELS, _CHANNEL_COLOURS)):
        means = [colours[k].mean[c] for k in classes]
        stds = [colours[k].std[c] for k in classes]
        ax.bar(x + (c - 1) * 0.27, means, 0.27, yerr=stds, capsize=2, color=colour, alpha=0.8, label=name)
    _class_ticks(ax, classes)
    ax.set_ylim(0, 255)
    ax.set_xlabel("Class")
    ax.set_ylabel("Pixel value (0–255), mean ± std")
    ax.set_title(f"Colour per class ({size}×{size} cached squares, all splits)")
    ax.legend(title="channel", fontsize=8)
    return save_figure(figure, path)


def plot_group_sizes(groups: Groups, path: str | Path) -> Path:
    """Bar chart of how many lesions (or patients) have 1, 2, 3, … images."""
    figure = new_figure(6.5, 4.5)
    ax = figure.subplots()
    sizes = list(groups.per_group)
    bars = ax.bar(np.arange(len(sizes)), [groups.per_group[k] for k in sizes], color="tab:blue")
    ax.bar_label(bars, padding=2, fontsize=8)
    ax.margins(y=0.12)
    ax.set_xticks(np.arange(len(sizes)), [str(k) for k in sizes])
    ax.set_xlabel(f"Images per {groups.kind}")
    ax.set_ylabel(f"{groups.kind.capitalize()}s")
    ax.set_title(f"Training images per {groups.kind} ({groups.groups} {groups.kind}s, {groups.images} images)")
    return save_figure(figure, path)


def plot_samples(samples: Mapping[str, Sequence[tuple[np.ndarray, str]]], columns: int, path: str | Path) -> Path:
    """One row of sample images per class, each titled with its id.

    Args:
        samples: ``{class: [(H×W×3 uint8 image, title), …]}`` (at most ``columns`` each).
        columns: images per row.
        path: PNG to write.
    """
    rows = len(samples)
    figure = new_figure(1.9 * columns + 0.8, 2.0 * rows + 0.5)
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    for (name, images), row in zip(samples.items(), axes):
        row[0].set_ylabel(name, fontsize=11)
        if not images:
            row[0].text(0.5, 0.5, "no images", ha="center", va="center", transform=row[0].transAxes)
        for ax, (image, title) in zip(row, images):
            ax.imshow(image)
            ax.set_title(title, fontsize=7)
    figure.suptitle("Sample images per class (cached centred squares)")
    return save_figure(figure, path)


def plot_pair(first: np.ndarray, second: np.ndarray, titles: tuple[str, str], distance: int,
              path: str | Path) -> Path:
    """Two images side by side, titled, with their hash distance."""
    figure = new_figure(5, 2.9)
    for ax, image, title in zip(figure.subplots(1, 2), (first, second), titles):
        ax.imshow(image)
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    figure.suptitle(f"pHash distance {distance} bits", fontsize=10)
    return save_figure(figure, path)

