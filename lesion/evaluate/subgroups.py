"""Subgroup report: the evaluation report of each group of images that share a patient attribute.

Dermatology classifiers fail unevenly across patients: models trained on ISIC-type data lost
27–36 % ROC-AUC on the Diverse Dermatology Images set, and a HAM10000-trained model scored AUC 0.72
on Fitzpatrick skin types I–II against 0.57 on V–VI (Daneshjou et al., "Disparities in dermatology
AI performance on a diverse, curated clinical image set", Science Advances 2022). As fairness
benchmarks do (MEDFAIR; Zong et al., ICLR 2023), the images are split by each attribute of
:data:`ATTRIBUTES` (sex, age band, anatomic site, skin tone where the metadata has one) and each
group gets BACC, macro AUC, per-class sensitivity and specificity, the false-negative rate of the
malignant classes and the ECE, each with a 95 % bootstrap interval; each attribute its worst group
and its largest gap per figure.

A group's figures are :func:`~lesion.evaluate.report.evaluation_report` of its images alone, its
BACC and macro AUC intervals included; the other intervals come from resamples of the group's
images drawn as the report draws its own (the same generator and seed). The grouping is a plain
pandas split, not fairlearn's ``MetricFrame``: that bootstraps the whole table (a group's size
changes from resample to resample, a small group vanishes from some) and takes quantiles with
NaN included (one resample without a class's images makes the interval NaN), so its intervals
would not be the report's restricted to the group.

Caveats: a missing value is a group of its own (``missing``), reported but left out of the worst
group and the gap, which compare known values. A group under ``min_images`` is reported with its
count only. Resamples draw images, not patients: a patient's several images count as independent.
Without labels (a folder of images) a group has its count and the share of its images predicted as
each class only: they describe the predictions, not their errors, and differ between groups
whenever the groups' lesions do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lesion.data.layouts import MALIGNANT
from lesion.errors import LesionError

# The report functions (and torch with them) are imported where the work starts: lesion.options
# reads ATTRIBUTES whenever evaluate.py starts, --help included.

MISSING = "missing"
ALL = "all images"
# The figures of metrics.txt and of the figure, by name; the CSV and JSON hold every figure.
HEADLINE = {"bacc": "BACC", "auc_macro": "macro AUC", "fnr_malignant": "FNR malignant", "ece": "ECE"}
_LOWER_IS_BETTER = ("fnr_malignant", "ece")


@dataclass(frozen=True)
class Attribute:
    """A patient attribute to split the images by: its column in the metadata (:mod:`lesion.data.metadata`),
    its name in reports, and whether its values are years grouped into age bands (else each value is a group)."""

    column: str
    title: str
    banded: bool = False


ATTRIBUTES = {
    "sex": Attribute("sex", "sex"),
    "age": Attribute("age", "age", banded=True),
    "site": Attribute("site", "anatomic site"),
    "skin_tone": Attribute("skin_tone", "skin tone"),
}


def band_names(edges: Sequence[int]) -> list[str]:
    """The age bands that increasing ``edges`` (years) make, in order: (30, 50, 70) → <30, 30–49, 50–69, ≥70."""
    return [f"<{edges[0]}", *(f"{lo}–{hi - 1}" for lo, hi in zip(edges, edges[1:])), f"≥{edges[-1]}"]


def _value_name(value: object) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def _groups(values: pd.Series, attribute: Attribute, age_bands: Sequence[int]) -> pd.Series:
    """Each image's group (its band or value as text, :data:`MISSING` where unknown), as ordered categories."""
    missing = values.isna().to_numpy()
    if attribute.banded:
        order = band_names(age_bands)
        band = np.searchsorted(np.asarray(age_bands, dtype=float), values.to_numpy(dtype=float), side="right")
        names = np.where(missing, MISSING, np.asarray(order, dtype=object)[band])
    else:
        names = np.array([MISSING if gone else _value_name(v) for v, gone in zip(values, missing)], dtype=object)
        order = sorted(set(names[~missing]))
    present = set(names)
    return pd.Series(pd.Categorical(names, categories=[g for g in [*order, MISSING] if g in present]),
                     index=values.index, name=values.name)


def subgroups_of(metadata: pd.DataFrame | None, subgroups: str | Sequence[str], age_bands: Sequence[int],
                 where: str) -> pd.DataFrame | None:
    """Each image's group of every attribute to report on, or ``None`` when there is none.

    Args:
        metadata: the images' metadata, one row per image in evaluation order
            (:func:`lesion.data.metadata.read_metadata`); ``None`` where they have none.
        subgroups: ``auto`` (every attribute of :data:`ATTRIBUTES` of which some image has a value),
            ``none``, or attribute names.
        age_bands: the age bands' edges in years, increasing (:func:`band_names`).
        where: whose metadata it is, for errors (e.g. ``the test split of DIR``).

    Returns:
        One ordered-categorical column per attribute, named as in :data:`ATTRIBUTES`.

    Raises:
        LesionError: an attribute named in ``subgroups`` has no value for any image.
    """
    if subgroups == "none":
        return None
    known = [] if metadata is None else [name for name, attribute in ATTRIBUTES.items() if
                                         attribute.column in metadata.columns and metadata[attribute.column].notna().any()]
    chosen = known if subgroups == "auto" else list(subgroups)
    absent = [name for name in chosen if name not in known]
    if absent:
        problem = "has no patient metadata" if metadata is None else f"gives no image a {absent[0]}"
        raise LesionError("subgroups", f"{where} {problem}",
                          f"use subgroups=auto (here: {', '.join(known) or 'none'}) or subgroups=none")
    if not chosen:
        return None
    return pd.DataFrame({name: _groups(metadata[ATTRIBUTES[name].column], ATTRIBUTES[name], age_bands)
                         for name in chosen}, index=metadata.index)


def malignant_classes(classes: Sequence[str]) -> list[str]:
    """The classes whose miss is a missed cancer: those of :data:`~lesion.data.layouts.MALIGNANT`, and a
    two-class layout's positive (second) class (``melanoma``, ``malignant``)."""
    return [c for k, c in enumerate(classes) if c in MALIGNANT or (len(classes) == 2 and k == 1)]


def _missed(confusion: np.ndarray, malignant: np.ndarray) -> np.ndarray:
    """The share of images of the ``malignant`` classes predicted as a class that is not, per confusion matrix
    (…×K×K, rows: true class); NaN without any."""
    cancers = confusion[..., malignant, :]
    total = cancers.sum((-2, -1))
    return np.divide(cancers[..., ~malignant].sum((-2, -1)), total, out=np.full(total.shape, np.nan), where=total > 0)


def _confusion_figures(confusion: np.ndarray, classes: Sequence[str], malignant: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class sensitivity and specificity (as :func:`~lesion.evaluate.report.evaluation_report` defines them)
    and, with malignant classes, their false-negative rate, of B confusion matrices (B×K×K, rows: true class)."""
    support, tp = confusion.sum(2), np.diagonal(confusion, axis1=1, axis2=2)
    negatives, false_pos = confusion.sum((1, 2))[:, None] - support, confusion.sum(1) - tp
    recall = np.divide(tp, support, out=np.full(support.shape, np.nan), where=support > 0)
    specificity = 1 - np.divide(false_pos, negatives, out=np.full(support.shape, np.nan), where=negatives > 0)
    figures = {}
    for c, name in enumerate(classes):
        figures[f"recall/{name}"], figures[f"specificity/{name}"] = recall[:, c], specificity[:, c]
    if malignant.any():
        figures["fnr_malignant"] = _missed(confusion, malignant)
    return figures


def resampled_figures(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], draws: np.ndarray,
                      ece_bins: int = 15) -> dict[str, np.ndarray]:
    """The figures whose intervals the evaluation report does not give, in each resample of the images.

    Args:
        probs: class probabilities, N×K.
        labels: true class indices, (N,).
        classes: the K class names.
        draws: B×N image indices, one resample per row.
        ece_bins: equal-width confidence bins of the ECE.

    Returns:
        ``recall/<C>``, ``specificity/<C>``, ``fnr_malignant`` (with malignant classes) and ``ece``:
        (B,) values each, NaN where a resample leaves one undefined.
    """
    from lesion.evaluate.calibration import calibration_bins

    k, b = len(classes), len(draws)
    cells = labels * k + probs.argmax(1)
    # Every resample's confusion matrix at once: one bincount over (resample, true, predicted).
    confusion = np.bincount((np.arange(b)[:, None] * k * k + cells[draws]).ravel(), minlength=b * k * k)
    figures = _confusion_figures(confusion.reshape(b, k, k), classes, np.isin(list(classes), malignant_classes(classes)))
    figures["ece"] = np.array([calibration_bins(probs[rows], labels[rows], ece_bins).ece for rows in draws])
    return figures


def group_figures(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], n_bootstrap: int, seed: int,
                  ece_bins: int = 15) -> dict:
    """The figures of one group of images, each with its 95 % bootstrap interval.

    Returns:
        ``images``, ``bacc``, ``auc_macro``, ``fnr_malignant`` (with malignant classes), ``ece``,
        ``recall/<C>`` and ``specificity/<C>``, each figure's ``ci/<figure>`` (``[lo, hi]``) after them.
    """
    from lesion.evaluate.report import (
        evaluation_report,
        percentile_interval,
        resample_blocks,
    )

    report = evaluation_report(probs, labels, list(classes), n_bootstrap=n_bootstrap, seed=seed, ece_bins=ece_bins)
    malignant = np.isin(list(classes), malignant_classes(classes))
    figures = {"images": len(labels), "bacc": report["bacc"], "auc_macro": report["auc_macro"]}
    if malignant.any():
        figures["fnr_malignant"] = float(_missed(np.asarray(report["confusion"]), malignant))
    figures["ece"] = report["ece"]
    figures.update({f"{key}/{name}": report[f"{key}/{name}"] for key in ("recall", "specificity") for name in classes})
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    # The report's own resamples (same seed, same stream), scored a block at a time.
    blocks = [resampled_figures(probs, labels, classes, draws, ece_bins)
              for draws in resample_blocks(len(labels), n_bootstrap, seed)]
    intervals = {"ci/bacc": report["ci/bacc"], "ci/auc_macro": report["ci/auc_macro"],
                 **{f"ci/{name}": percentile_interval(np.concatenate([b[name] for b in blocks])) for name in blocks[0]}}
    return {**figures, **{f"ci/{name}": intervals[f"ci/{name}"] for name in figures if name != "images"}}


def _compared(groups: dict[str, dict]) -> dict:
    """Per figure, the worst of the reported known-value groups and the gap between the best and the worst
    (where at least two have it)."""
    known = {name: figures for name, figures in groups.items() if name != MISSING and len(figures) > 1}
    names = [name for name in next(iter(known.values()), {}) if name != "images" and not name.startswith("ci/")]
    worst, gap = {}, {}
    for figure in names:
        values = {group: figures[figure] for group, figures in known.items() if not math.isnan(figures[figure])}
        if len(values) < 2:
            continue
        group = (max if figure in _LOWER_IS_BETTER else min)(values, key=values.get)
        worst[figure] = {"group": group, "value": values[group]}
        gap[figure] = max(values.values()) - min(values.values())
    return {"worst": worst, "gap": gap}


def subgroup_report(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], groups: pd.DataFrame,
                    min_images: int, n_bootstrap: int, seed: int) -> dict:
    """Every group's figures (:func:`group_figures`), and per attribute its worst group and gap per figure.

    Args:
        probs: class probabilities, N×K.
        labels: true class indices, (N,).
        classes: the K class names.
        groups: each image's group per attribute (:func:`subgroups_of`), rows in the order of ``probs``.
        min_images: a smaller group is reported with its count (``images``) only.
        n_bootstrap, seed: the resamples of every interval.

    Returns:
        ``all`` (the figures of every image), ``attributes`` (per attribute: ``title``, ``groups``
        (group name → figures), ``worst`` (figure → ``group``, ``value``) and ``gap`` (figure → largest
        difference)), and the settings: ``classes``, ``malignant``, ``min_images``, ``n_bootstrap``, ``seed``.
    """
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    attributes = {}
    for name, column in groups.items():
        found = {}
        for group in column.cat.categories:
            rows = np.flatnonzero((column == group).to_numpy())
            found[group] = (group_figures(probs[rows], labels[rows], classes, n_bootstrap, seed)
                            if len(rows) >= min_images else {"images": len(rows)})
        attributes[name] = {"title": ATTRIBUTES[name].title, "groups": found, **_compared(found)}
    return {"all": group_figures(probs, labels, classes, n_bootstrap, seed), "attributes": attributes,
            "classes": list(classes), "malignant": malignant_classes(classes), "min_images": min_images,
            "n_bootstrap": n_bootstrap, "seed": seed}


def predicted_shares(probs: np.ndarray, classes: Sequence[str], groups: pd.DataFrame, min_images: int) -> dict:
    """Unlabelled images: per group its count and the share of its images predicted as each class
    (``predicted/<C>``) and as any malignant class (``predicted_malignant``).

    Returns:
        ``all``, ``attributes`` (per attribute: ``title``, ``groups``) and the settings, as
        :func:`subgroup_report`; a group under ``min_images`` has its count only.
    """
    predicted = np.asarray(probs).argmax(1)
    malignant = np.isin(list(classes), malignant_classes(classes))

    def shares(rows: np.ndarray) -> dict:
        share = np.bincount(predicted[rows], minlength=len(classes)) / len(rows)
        figures = {"images": len(rows), **{f"predicted/{name}": float(s) for name, s in zip(classes, share)}}
        if malignant.any():
            figures["predicted_malignant"] = float(share[malignant].sum())
        return figures

    attributes = {}
    for name, column in groups.items():
        rows = {group: np.flatnonzero((column == group).to_numpy()) for group in column.cat.categories}
        attributes[name] = {"title": ATTRIBUTES[name].title,
                            "groups": {group: shares(r) if len(r) >= min_images else {"images": len(r)}
                                       for group, r in rows.items()}}
    return {"all": shares(np.arange(len(predicted))), "attributes": attributes, "classes": list(classes),
            "malignant": malignant_classes(classes), "min_images": min_images}


def _row(attribute: str, group: str, figures: dict) -> dict:
    """A group's figures as one CSV row: each figure, then its interval as ``<figure>_lo``, ``<figure>_hi``."""
    row = {"attribute": attribute, "group": group, "images": figures["images"], "reported": len(figures) > 1}
    for name, value in figures.items():
        if name.startswith("ci/"):
            continue
        row[name] = value
        if f"ci/{name}" in figures:
            row[f"{name}_lo"], row[f"{name}_hi"] = figures[f"ci/{name}"]
    return row


def subgroup_table(report: dict) -> pd.DataFrame:
    """``subgroups.csv``: one row per group, all images first (``attribute`` ``all``), with ``attribute``,
    ``group``, ``images``, ``reported`` (whether it has figures: at least ``min_images``), then the figures."""
    rows = [_row("all", ALL, report["all"])]
    for name, attribute in report["attributes"].items():
        rows += [_row(name, group, figures) for group, figures in attribute["groups"].items()]
    return pd.DataFrame(rows)


def _cell(figures: dict, name: str) -> str:
    value, interval = figures.get(name), figures.get(f"ci/{name}")
    if value is None:
        return "—"
    if math.isnan(value):
        return "n/a"
    return f"{value:.4f}" + ("" if interval is None or math.isnan(interval[0]) else
                             f" [{interval[0]:.4f}, {interval[1]:.4f}]")


def format_subgroups(report: dict) -> str:
    """The subgroup section of ``metrics.txt``: per attribute and group its images and :data:`HEADLINE` figures
    with their intervals, then the attribute's worst group (and the gap) per figure."""
    names = [name for name in HEADLINE if name in report["all"]]
    width, cell = 22, 26
    lines = [f"Subgroups (intervals as above; a group under {report['min_images']} images: its count only; per-class "
             "sensitivity and specificity: subgroups.csv)",
             f"{'group':<{width}}{'images':>7}  " + "".join(f"{HEADLINE[n]:<{cell}}" for n in names),
             f"{ALL:<{width}}{report['all']['images']:>7}  " + "".join(f"{_cell(report['all'], n):<{cell}}" for n in names)]
    for attribute in report["attributes"].values():
        lines.append(attribute["title"])
        for group, figures in attribute["groups"].items():
            lines.append(f"  {group:<{width - 2}}{figures['images']:>7}  " +
                         "".join(f"{_cell(figures, n):<{cell}}" for n in names))
        worst = [attribute["worst"].get(n) for n in names]
        lines.append(f"  {'worst (gap)':<{width - 2}}{'':>7}  " + "".join(
            f"{'—' if w is None else w['group'] + ' (' + format(attribute['gap'][n], '.4f') + ')':<{cell}}"
            for n, w in zip(names, worst)))
    return "\n".join(line.rstrip() for line in lines) + "\n"
