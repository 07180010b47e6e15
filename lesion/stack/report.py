"""What stacking reports: scores of the stacked trees beside the image models', the tables and the importance figure.

Two classes are scored by the partial AUC above 80 % true-positive rate (the ISIC 2024 challenge's
metric, :func:`lesion.metrics.partial_auc`) and the AUC; more classes by BACC and macro AUC, as
training's epoch metrics compute them (:class:`lesion.metrics.LesionMetrics`). A split without an
image of some class has undefined figures (NaN, ``null`` in JSON).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lesion.evaluate.plots import new_figure, save_figure
from lesion.metrics import LesionMetrics, top_k_sensitivity

# Bars of the importance figure: the most important features.
SHOWN_FEATURES = 30


def score_metrics(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                  patients: np.ndarray | None = None) -> dict[str, float]:
    """``pauc80`` and ``auc`` for two classes (with ``patients``, also ``top15``: the share of the positive
    images among their patient's 15 highest scores, the ISIC 2024 challenge's secondary figure), ``bacc``
    and ``auc_macro`` for more, of N×C ``probs``."""
    metrics = LesionMetrics(classes)
    metrics.update(torch.as_tensor(probs, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.int64))
    found = metrics.compute()
    if len(classes) == 2:
        figures = {"pauc80": found["pauc80"], "auc": found["auc_macro"]}
        if patients is not None:
            figures["top15"] = top_k_sensitivity(labels, probs[:, 1], patients, k=15)
        return figures
    return {"bacc": found["bacc"], "auc_macro": found["auc_macro"]}


def headline(metrics: dict[str, float]) -> str:
    """The figures of :func:`score_metrics` in one phrase, e.g. ``pauc80 0.1234, auc 0.9012``."""
    return ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())


def scores_table(ids: Sequence[str], id_column: str, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """A table of images: the id column, then ``columns`` (name → values, or N×C probabilities named ``name/<class>``
    by the caller)."""
    table = pd.DataFrame({id_column: list(ids)})
    for name, values in columns.items():
        table[name] = values
    return table


def probability_columns(prefix: str, probs: np.ndarray, classes: Sequence[str]) -> dict[str, np.ndarray]:
    """``<prefix>/<class>`` → that class's column of N×C ``probs``."""
    return {f"{prefix}/{name}": probs[:, k] for k, name in enumerate(classes)}


def submission(ids: Sequence[str], probs: np.ndarray, classes: Sequence[str], id_column: str) -> pd.DataFrame:
    """The challenge's submission: ``<id>,target`` (the positive class's probability) for two classes, as ISIC 2020
    and 2024 take it; ``<id>,<class>…`` (one probability per class) for more, as ISIC 2018 and 2019 do."""
    if len(classes) == 2:
        return scores_table(ids, id_column, {"target": probs[:, 1]})
    return scores_table(ids, id_column, {name: probs[:, k] for k, name in enumerate(classes)})


def importance_table(names: Sequence[str], shares: np.ndarray) -> pd.DataFrame:
    """``feature,importance``: each feature's mean share of the trees' importance, most important first."""
    table = pd.DataFrame({"feature": list(names), "importance": shares})
    return table.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)


def plot_importances(table: pd.DataFrame, path: str | Path, title: str) -> Path:
    """Horizontal bars of the :data:`SHOWN_FEATURES` most important features of an :func:`importance_table`."""
    shown = table.head(SHOWN_FEATURES).iloc[::-1]
    figure = new_figure(8, 1.2 + 0.25 * len(shown))
    ax = figure.subplots()
    ax.barh(np.arange(len(shown)), shown["importance"], color="tab:blue")
    ax.set_yticks(np.arange(len(shown)), shown["feature"], fontsize=8)
    ax.set_xlabel("share of the trees' importance (mean over folds and seeds)")
    ax.set_title(title)
    return save_figure(figure, path)
