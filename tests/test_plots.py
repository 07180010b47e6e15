"""Every figure lands as a readable, non-blank PNG, atomically, without pyplot global state."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy.special import softmax

from lesion.evaluate.plots import (plot_augmented_samples, plot_class_distribution, plot_confusion,
                          plot_reliability, plot_roc, plot_training_curves)

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
