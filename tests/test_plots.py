"""Every figure lands as a readable, non-blank PNG, atomically, without pyplot global state."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.colors import to_hex, to_rgb
from PIL import Image
from scipy.special import softmax

from lesion.evaluate import plots
from lesion.evaluate.plots import (plot_augmented_samples, plot_class_distribution, plot_confusion,
                          plot_reliability, plot_roc, plot_training_curves, save_figure)

CLASSES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]


@pytest.fixture
def predictions():
    rng = np.random.default_rng(0)
    labels = rng.choice([0, 1, 2, 3, 4, 6], size=300)  # no DF: its ROC curve is skipped
    logits = rng.normal(size=(300, 7))
    logits[np.arange(300), labels] += 1.5
    return softmax(logits, axis=1), labels


@pytest.fixture
def no_leaks(tmp_path):
    """Fails the test if pyplot gained figures; returns the folder to write in."""
    before = plt.get_fignums()
    yield tmp_path
    assert plt.get_fignums() == before


def check_png(path, folder):
    assert path.exists()
    assert [p.name for p in folder.iterdir()] == [path.name]  # no temporary file left behind
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert 200 <= image.width <= 4000 and 200 <= image.height <= 4000
        assert np.asarray(image.convert("RGB")).std() > 0


def test_confusion(predictions, no_leaks):
    probs, labels = predictions
    confusion = np.zeros((7, 7), int)
    np.add.at(confusion, (labels, probs.argmax(1)), 1)
    path = plot_confusion(confusion.tolist(), CLASSES, no_leaks / "confusion.png", title="test split")
    check_png(path, no_leaks)


def test_roc(predictions, no_leaks):
    check_png(plot_roc(*predictions, CLASSES, no_leaks / "roc.png"), no_leaks)


@pytest.mark.parametrize("ece", [None, 0.05])
def test_reliability(predictions, no_leaks, ece):
    check_png(plot_reliability(*predictions, no_leaks / "reliability.png", bins=10, ece=ece), no_leaks)


def test_class_distribution(predictions, no_leaks):
    _, labels = predictions
    check_png(plot_class_distribution(labels, CLASSES, no_leaks / "classes.png", "train split"), no_leaks)


def write_lightning_csv(path, epochs=3, steps_per_epoch=4):
    """A CSVLogger metrics.csv: step rows, then train-epoch and val-epoch rows, each sparse."""
    rows, step = [], 0
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            rows.append({"epoch": epoch, "step": step, "train/loss_step": 1.5 - 0.1 * step})
            step += 1
        rows.append({"epoch": epoch, "step": step - 1, "val/loss": 1.2 - 0.2 * epoch, "val/bacc": 0.4 + 0.1 * epoch,
                     "val/auc_macro": 0.7 + 0.05 * epoch, "val/recall/MEL": 0.5})
        rows.append({"epoch": epoch, "step": step - 1, "train/loss_epoch": 1.4 - 0.3 * epoch,
                     "train/bacc": 0.35 + 0.15 * epoch, "train/auc_macro": 0.65 + 0.1 * epoch})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("log", ["lightning", "one_epoch_val_only"])
def test_training_curves(log, tmp_path, no_leaks):
    csv = tmp_path / "metrics.csv"
    if log == "lightning":
        write_lightning_csv(csv)
    else:
        csv.write_text("epoch,step,val/bacc,val/loss\n0,9,0.5,1.0\n")
    out = no_leaks / "figures"
    out.mkdir()
    check_png(plot_training_curves(csv, out / "curves.png"), out)


def test_training_curves_without_epoch_metrics(tmp_path, no_leaks):
    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,step,train/loss_step\n0,0,1.5\n0,1,1.4\n")
    out = no_leaks / "figures"
    out.mkdir()
    assert plot_training_curves(csv, out / "curves.png") is None
    assert list(out.iterdir()) == []


def test_augmented_samples(no_leaks):
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    pixels = torch.rand(10, 3, 32, 32)
    images = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 0, 1, 2])
    path = plot_augmented_samples(images, labels, CLASSES, mean, std, no_leaks / "augmented.png", columns=4)
    check_png(path, no_leaks)


def drawn_roc(probs: np.ndarray, labels: np.ndarray, classes: list[str], path):
    """``plot_roc``'s figure and PNG: (its axes, the RGB pixels, the class curves in drawing order)."""
    drawn = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "save_figure", lambda figure, out: drawn.append(figure) or save_figure(figure, out))
        plot_roc(probs, labels, classes, path)
    (figure,) = drawn
    (ax,) = figure.axes
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    return ax, pixels, [line for line in ax.get_lines() if line.get_label() != "chance" and len(line.get_xdata())]


def test_coinciding_roc_curves_both_show(tmp_path):
    """Two classes whose scores mirror each other: each class's one-vs-rest curve is the other's, drawn on the
    same pixels. Both colours must still be seen along the curve (outside the legend), each about as much
    as the other."""
    margin = np.random.default_rng(0).normal(0.15, 0.2, 200)
    labels = np.r_[np.ones(200, int), np.zeros(200, int)]
    melanoma = np.clip(0.5 + np.r_[margin, -margin], 0.01, 0.99)
    ax, pixels, curves = drawn_roc(np.c_[1 - melanoma, melanoma], labels, ["benign", "melanoma"], tmp_path / "roc.png")
    assert len(curves) == 2
    np.testing.assert_allclose(curves[0].get_xydata(), curves[1].get_xydata())  # they coincide
    height = pixels.shape[0]
    inside = np.zeros(pixels.shape[:2], bool)
    plot, legend = ax.get_window_extent(), ax.get_legend().get_window_extent()
    inside[int(height - plot.y1):int(height - plot.y0), int(plot.x0):int(plot.x1)] = True
    inside[int(height - legend.y1):int(height - legend.y0) + 1, int(legend.x0):int(legend.x1) + 1] = False
    seen = [int((inside & (np.abs(pixels - np.array(to_rgb(c.get_color())) * 255).sum(2) < 60)).sum()) for c in curves]
    assert min(seen) >= 0.25 * max(seen), seen
    assert [c.get_label().split(" (AUC ")[0] for c in curves] == ["benign", "melanoma"]
    assert all(re.search(r"\(AUC \d\.\d{3}\)$", c.get_label()) for c in curves)


@settings(max_examples=15, deadline=None)
@given(k=st.integers(2, 20), seed=st.integers(0, 2**16))
def test_roc_curves_never_share_a_colour_and_line_style(k, seed, tmp_path_factory):
    """Up to 20 classes; and a curve drawn later over an earlier one either has gaps or is thinner."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.arange(k), rng.integers(0, k, 10 * k)]
    probs = softmax(rng.normal(size=(len(labels), k)) + 2 * np.eye(k)[labels], axis=1)
    classes = [f"class {j}" for j in range(k)]
    _, _, curves = drawn_roc(probs, labels, classes, tmp_path_factory.mktemp("roc") / "roc.png")
    assert len(curves) == k
    looks = [(to_hex(c.get_color()), c.get_linestyle()) for c in curves]
    assert len(set(looks)) == k, looks
    for i, earlier in enumerate(curves):
        for later in curves[i + 1:]:
            assert later.get_linestyle() != "-" or later.get_linewidth() < earlier.get_linewidth()
