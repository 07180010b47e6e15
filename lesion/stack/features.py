"""The trees' features: image scores, tabular columns encoded, and patient-relative ("ugly duckling") features.

A lesion unlike the patient's other lesions is suspicious (Grob & Bystryn 1998, the "ugly duckling"
sign); the top ISIC 2024 solutions gave the trees each numeric value relative to the patient's
others. For every numeric feature x and each image of patient p:

    x − mean_p(x),   (x − mean_p(x)) / sd_p(x),   rank of x among p's images (a share in (0, 1])

and once per image the number of p's images. Means, spreads (population, ddof = 0) and ranks are
over p's images with a known x (ties share their average rank); where x is missing, or p's spread
is 0 (one image, or all alike), the value is missing (NaN), which the trees route on its own. The
features depend on each image's patient and values only, not on the order of the rows.

Categories are one-hot columns ``<column>=<value>`` (values seen in any image, sorted) and
``<column> missing``; numbers stay numbers, NaN when missing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from lesion.stack.tabular import Columns

PATIENT_LESIONS = "patient lesions"


def image_score_names(classes: Sequence[str]) -> list[str]:
    """The image-score features: the positive class's probability for two classes, else one per class."""
    return ["image score"] if len(classes) == 2 else [f"image {name}" for name in classes]


def image_score_frame(probs: np.ndarray, classes: Sequence[str], index: pd.Index) -> pd.DataFrame:
    """The fold models' probabilities (N×C) as the :func:`image_score_names` features."""
    values = probs[:, 1:] if len(classes) == 2 else probs
    return pd.DataFrame(values, index=index, columns=image_score_names(classes), dtype="float64")


def patient_relative(values: pd.DataFrame, patients: Sequence[str]) -> pd.DataFrame:
    """The patient-relative features of every (numeric) column of ``values`` (module docstring).

    Args:
        values: N rows of numeric columns (NaN when missing).
        patients: the patient of each row.

    Returns:
        N rows, in the order of ``values``: ``<x> patient diff``, ``<x> patient z``, ``<x> patient rank``
        per column, then ``patient lesions``.
    """
    patient = pd.Series(np.asarray(patients, dtype=object), index=values.index)
    grouped = values.groupby(patient, sort=False)
    mean = grouped.transform("mean")
    # Alike values have no spread to measure by (a rounding residue of their mean would make one).
    spread = grouped.transform("std", ddof=0).where(grouped.transform("max") > grouped.transform("min"))
    rank = grouped.rank(method="average", pct=True)
    out = {}
    for column in values.columns:
        out[f"{column} patient diff"] = values[column] - mean[column]
        out[f"{column} patient z"] = (values[column] - mean[column]) / spread[column]
        out[f"{column} patient rank"] = rank[column]
    out[PATIENT_LESIONS] = patient.map(patient.value_counts()).astype("float64")
    return pd.DataFrame(out, index=values.index)


def one_hot(values: pd.DataFrame) -> pd.DataFrame:
    """Each category column as ``<column>=<value>`` columns (values seen, sorted) and ``<column> missing``."""
    out = {}
    for column in values.columns:
        cells = values[column]
        missing = cells.isna()
        for value in sorted(set(cells[~missing])):
            out[f"{column}={value}"] = (cells == value).astype("float64")
        out[f"{column} missing"] = missing.astype("float64")
    return pd.DataFrame(out, index=values.index)


def feature_table(scores: pd.DataFrame | None, tabular: pd.DataFrame, columns: Columns,
                  patients: Sequence[str] | None) -> pd.DataFrame:
    """Every feature of every image (training and test rows together, so that a patient's features see all
    of the patient's images and a category's columns are the same for all).

    Args:
        scores: the :func:`image_score_frame` features, or ``None`` (not read).
        tabular: the ``columns`` (:func:`lesion.stack.tabular.read_tabular`), on the same index.
        columns: which of ``tabular`` are numbers and which categories.
        patients: the patient of each row, or ``None`` (no patient-relative features).

    Returns:
        One float column per feature: image scores, numbers, categories one-hot, then patient-relative features.
    """
    numeric = pd.concat([frame for frame in (scores, tabular[list(columns.numeric)]) if frame is not None], axis=1)
    parts = [numeric, one_hot(tabular[list(columns.categorical)])]
    if patients is not None:
        parts.append(patient_relative(numeric, patients))
    return pd.concat(parts, axis=1).astype("float64")
