"""Subgroup report (evaluate.py subgroups=…): each group's figures are the evaluation report's restricted to it."""

from __future__ import annotations

import json
import math
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from sklearn.metrics import recall_score

from lesion.data.layouts import LAYOUTS
from lesion.errors import LesionError
from lesion.evaluate import plots
from lesion.evaluate.report import evaluation_report
from lesion.evaluate.subgroups import (ATTRIBUTES, HEADLINE, MISSING, band_names, format_subgroups, group_figures,
                                       malignant_classes, predicted_shares, resampled_figures, subgroup_report,
                                       subgroup_table, subgroups_of)
from lesion.options import EVALUATE

CLASSES = ["MEL", "NV", "BCC", "BKL"]  # MEL and BCC malignant
BANDS = [30, 50, 70]
# The figures a group shares with the overall report: the same computation on the group's rows.
SHARED = ("bacc", "auc_macro", "ece", "ci/bacc", "ci/auc_macro",
          *(f"{key}/{name}" for key in ("recall", "specificity") for name in CLASSES))


def same(value, expected) -> bool:
    """Equal, NaN equal to NaN, element by element for intervals."""
    if isinstance(expected, list):
        return len(value) == len(expected) and all(same(v, e) for v, e in zip(value, expected))
    return (math.isnan(value) and math.isnan(expected)) or value == expected


@st.composite
def evaluations(draw) -> tuple:
    """Probabilities, labels and metadata of a few images, with missing values, and a minimum group size."""
    n = draw(st.integers(3, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    probs = rng.dirichlet(np.ones(len(CLASSES)), n)
    labels = np.asarray(draw(st.lists(st.integers(0, len(CLASSES) - 1), min_size=n, max_size=n)))
    sexes = draw(st.lists(st.sampled_from(["female", "male", None]), min_size=n, max_size=n))
    ages = draw(st.lists(st.one_of(st.none(), st.integers(0, 100)), min_size=n, max_size=n))
    metadata = pd.DataFrame({"age": [math.nan if a is None else float(a) for a in ages],
                             "sex": pd.Series(sexes, dtype=object), "site": pd.Series([None] * n, dtype=object)},
                            index=[f"ISIC_{k:07d}" for k in range(n)])
    return probs, labels, metadata, draw(st.integers(1, 8)), draw(st.integers(0, 99))


@settings(max_examples=25, deadline=None)
@given(evaluations())
def test_each_group_gets_the_report_of_its_own_images_and_none_is_dropped(case):
    probs, labels, metadata, min_images, seed = case
    groups = subgroups_of(metadata, "auto", BANDS, "test")
    known = [name for name in ("sex", "age") if metadata[name].notna().any()]
    if not known:
        assert groups is None
        return
    assert list(groups.columns) == known  # the site, given for no image, is no attribute here
    report = subgroup_report(probs, labels, CLASSES, groups, min_images, n_bootstrap=20, seed=seed)
    overall = evaluation_report(probs, labels, CLASSES, n_bootstrap=20, seed=seed)
    assert all(same(report["all"][key], overall[key]) for key in SHARED)
    for name in known:
        found = report["attributes"][name]["groups"]
        assert sum(figures["images"] for figures in found.values()) == len(labels)
        assert found.get(MISSING, {"images": 0})["images"] == metadata[name].isna().sum()
        for group, figures in found.items():
            rows = np.flatnonzero((groups[name] == group).to_numpy())
            assert figures["images"] == len(rows) > 0
            if len(rows) < min_images:
                assert figures == {"images": len(rows)}
                continue
            expected = evaluation_report(probs[rows], labels[rows], CLASSES, n_bootstrap=20, seed=seed)
            for key in SHARED:
                assert same(figures[key], expected[key]), (name, group, key)


@settings(max_examples=25, deadline=None)
@given(evaluations())
def test_resampled_figures_of_the_images_themselves_are_the_reports(case):
    probs, labels, _, _, _ = case
    report = evaluation_report(probs, labels, CLASSES, n_bootstrap=1)
    identity = resampled_figures(probs, labels, CLASSES, np.arange(len(labels))[None])
    for key in ("ece", *(f"{k}/{c}" for k in ("recall", "specificity") for c in CLASSES)):
        assert same(float(identity[key][0]), report[key]), key
    # Missed cancers: the recall of "malignant" in the malignant-versus-benign problem, subtracted from 1.
    malignant = np.isin(np.array(CLASSES)[labels], ["MEL", "BCC"])
    flagged = np.isin(np.array(CLASSES)[probs.argmax(1)], ["MEL", "BCC"])
    expected = 1 - recall_score(malignant, flagged) if malignant.any() else math.nan
    assert float(identity["fnr_malignant"][0]) == pytest.approx(expected, nan_ok=True)
    assert group_figures(probs, labels, CLASSES, n_bootstrap=5, seed=0)["fnr_malignant"] == pytest.approx(expected,
                                                                                                           nan_ok=True)


@settings(max_examples=25, deadline=None)
@given(evaluations())
def test_the_worst_group_is_a_known_group_no_better_than_any_other(case):
    probs, labels, metadata, min_images, seed = case
    groups = subgroups_of(metadata, "auto", BANDS, "test")
    if groups is None:
        return
    report = subgroup_report(probs, labels, CLASSES, groups, min_images, n_bootstrap=10, seed=seed)
    for attribute in report["attributes"].values():
        known = {g: f for g, f in attribute["groups"].items() if g != MISSING and len(f) > 1}
        for figure, worst in attribute["worst"].items():
            values = [f[figure] for f in known.values() if not math.isnan(f[figure])]
            assert worst["group"] in known and worst["value"] == known[worst["group"]][figure]
            lower_is_better = figure in ("fnr_malignant", "ece")
            assert all((v <= worst["value"]) if lower_is_better else (v >= worst["value"]) for v in values)
            assert attribute["gap"][figure] == pytest.approx(max(values) - min(values))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 120), min_size=1, max_size=5, unique=True).map(sorted),
       st.lists(st.floats(0, 120), min_size=1, max_size=30))
def test_ages_fall_in_bands_in_order_and_an_edge_starts_its_band(edges, ages):
    names = band_names(edges)
    assert len(names) == len(edges) + 1 and names[0] == f"<{edges[0]}" and names[-1] == f"≥{edges[-1]}"
    ordered = sorted(ages + [float(e) for e in edges])
    metadata = pd.DataFrame({"age": ordered})
    found = subgroups_of(metadata, ["age"], edges, "test")["age"]
    positions = [names.index(g) for g in found]
    assert positions == sorted(positions)  # an older patient is never in a younger band
    for age, group in zip(ordered, found):
        if age in edges:
            assert group.startswith(f"{int(age)}–") or group == f"≥{int(age)}"
        elif age < edges[0]:
            assert group == f"<{edges[0]}"


def test_attributes_are_the_ones_the_metadata_gives_and_skin_tone_slots_in():
    metadata = pd.DataFrame({"age": [40.0, math.nan], "sex": [None, None], "site": ["torso", None]})
    assert list(subgroups_of(metadata, "auto", BANDS, "test").columns) == ["age", "site"]
    assert subgroups_of(metadata, "none", BANDS, "test") is None
    assert subgroups_of(None, "auto", BANDS, "test") is None
    with_tone = metadata.assign(skin_tone=["V", None])
    groups = subgroups_of(with_tone, "auto", BANDS, "test")
    assert list(groups.columns) == ["age", "site", "skin_tone"] and list(groups["skin_tone"]) == ["V", MISSING]
    assert list(groups["age"]) == ["30–49", MISSING]
    with pytest.raises(LesionError, match="subgroups: test gives no image a sex — use subgroups=auto "
                                          r"\(here: age, site\) or subgroups=none"):
        subgroups_of(metadata, ["age", "sex"], BANDS, "test")
    with pytest.raises(LesionError, match="subgroups: test has no patient metadata"):
        subgroups_of(None, ["age"], BANDS, "test")
    assert set(ATTRIBUTES) == {"sex", "age", "site", "skin_tone"}


def test_malignant_classes_of_every_layout():
    assert malignant_classes(LAYOUTS["isic2018"].classes) == ["MEL", "BCC", "AKIEC"]
    assert malignant_classes(LAYOUTS["isic2019"].classes) == ["MEL", "BCC", "AK", "SCC"]
    assert malignant_classes(LAYOUTS["isic2017"].classes) == ["MEL"]
    assert malignant_classes(LAYOUTS["isic2020"].classes) == ["melanoma"]
    assert malignant_classes(LAYOUTS["isic2024"].classes) == ["malignant"]
    assert malignant_classes(["cat", "dog", "bird"]) == []


def test_a_group_predicted_without_error_has_intervals_of_one_point():
    labels = np.array([0, 1, 2, 3] * 5)
    figures = group_figures(np.eye(4)[labels], labels, CLASSES, n_bootstrap=50, seed=0)
    assert figures["ci/bacc"] == [1.0, 1.0] and figures["ci/fnr_malignant"] == [0.0, 0.0]
    assert all(figures[f"ci/recall/{c}"] == [1.0, 1.0] == figures[f"ci/specificity/{c}"] for c in CLASSES)


def test_table_text_figure_and_unlabelled_shares(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 30)
    probs = rng.dirichlet(np.ones(4), 30)
    metadata = pd.DataFrame({"sex": ["female"] * 20 + ["male"] * 6 + [None] * 4})
    groups = subgroups_of(metadata, "auto", BANDS, "test")
    report = subgroup_report(probs, labels, CLASSES, groups, min_images=5, n_bootstrap=20, seed=0)
    table = subgroup_table(report)
    assert list(table["group"]) == ["all images", "female", "male", MISSING]
    assert list(table["reported"]) == [True, True, True, False] and table.loc[3, "bacc":].isna().all()
    assert list(table.columns[:7]) == ["attribute", "group", "images", "reported", "bacc", "bacc_lo", "bacc_hi"]
    text = format_subgroups(report)
    assert all(word in text for word in ("female", "male", "missing", "worst (gap)", "FNR malignant"))
    few, many = tmp_path / "few.png", tmp_path / "many.png"
    plots.plot_subgroups({**report, "attributes": {}}, HEADLINE, few)
    plots.plot_subgroups(report, HEADLINE, many)
    with Image.open(few) as small, Image.open(many) as large:  # one row per group, four panels
        assert large.size[0] == small.size[0] > 600 and large.size[1] > small.size[1]
    shares = predicted_shares(probs, CLASSES, groups, min_images=5)
    for group, figures in shares["attributes"]["sex"]["groups"].items():
        if group == MISSING:
            assert figures == {"images": 4}
            continue
        assert sum(figures[f"predicted/{c}"] for c in CLASSES) == pytest.approx(1)
        rows = (groups["sex"] == group).to_numpy()
        assert figures["predicted_malignant"] == pytest.approx(np.isin(probs[rows].argmax(1), [0, 2]).mean())


@pytest.mark.parametrize("key, value", [("subgroups", "bogus"), ("subgroups", ["sex", "sex"]), ("subgroups", []),
                                        ("subgroups", ["height"]), ("subgroup_age_bands", [50, 30]),
                                        ("subgroup_age_bands", [30, 200]), ("subgroup_age_bands", []),
                                        ("subgroup_min_images", 0)])
def test_bad_subgroup_options_are_refused(key, value):
    with pytest.raises(LesionError, match=f"^{key}: "):
        EVALUATE.fields[key].check(key, value)


# ---------------------------------------------------------------------------------------------- end to end

TINY = ["trainer=cpu", "model.backbone=resnet18", "model.weights=none", "dataset.image_size=32",
        "dataset.batch_size=8", "dataset.num_workers=0", "trainer.max_epochs=1"]
EVALUATE_QUICK = ["num_workers=0", "gradcam.n=0", "bootstrap=20", "subgroup_min_images=3"]


@pytest.fixture(scope="module")
def trained_2019(run_cli, tmp_path_factory) -> Path:
    """One epoch on synthetic ISIC 2019, whose test split has age, sex and site."""
    run_dir = tmp_path_factory.mktemp("run2019")
    run_cli("train.py", "dataset=synthetic2019", "dataset.synthetic_n=60", *TINY, f"hydra.run.dir={run_dir}")
    return run_dir


@pytest.mark.slow
def test_split_ensemble_and_folder_subgroups_end_to_end(trained_2019, run_cli, tmp_path, lesion_cache):
    best = trained_2019 / "checkpoints" / "best.ckpt"
    out = tmp_path / "split"
    run_cli("evaluate.py", f"ckpt={best}", *EVALUATE_QUICK, f"out={out}")
    report = json.loads((out / "subgroups.json").read_text())
    assert list(report["attributes"]) == ["sex", "age", "site"]
    assert "Subgroups (" in (out / "metrics.txt").read_text() and (out / "plots" / "subgroups.png").is_file()
    # The sex groups, read from the official metadata file, give the figures of the predictions' rows.
    predictions = pd.read_csv(out / "predictions.csv")
    classes = report["classes"]
    root = lesion_cache / "synthetic2019-n60-s0"
    sexes = pd.read_csv(root / "ISIC_2019_Test_Metadata.csv").set_index("image")["sex"]
    sex = sexes.reindex(predictions["image"]).fillna(MISSING).to_numpy()
    probs, labels = predictions[classes].to_numpy(), predictions["label"].map(classes.index).to_numpy()
    for group, figures in report["attributes"]["sex"]["groups"].items():
        rows = sex == group
        assert figures["images"] == rows.sum()
        if figures["images"] >= 3:
            expected = evaluation_report(probs[rows], labels[rows], classes, n_bootstrap=20, seed=0)
            assert figures["bacc"] == pytest.approx(expected["bacc"], abs=1e-6)
            assert figures["auc_macro"] == pytest.approx(expected["auc_macro"], abs=1e-6, nan_ok=True)

    # An ensemble of two copies of the model reports the same groups.
    twin = tmp_path / "twin.ckpt"
    shutil.copy(best, twin)
    ensemble = tmp_path / "ensemble"
    run_cli("evaluate.py", f"ckpt=[{best},{twin}]", *EVALUATE_QUICK, "plots=false", f"out={ensemble}")
    both = json.loads((ensemble / "subgroups.json").read_text())
    assert both["attributes"]["sex"]["groups"].keys() == report["attributes"]["sex"]["groups"].keys()
    assert both["all"]["bacc"] == pytest.approx(report["all"]["bacc"], abs=1e-6)

    # A folder of the test images with a metadata CSV: counts and predicted shares per group (no labels).
    folder = tmp_path / "images"
    with zipfile.ZipFile(root / "ISIC_2019_Test_Input.zip") as archive:
        archive.extractall(folder)
    metadata = tmp_path / "metadata.csv"
    pd.DataFrame({"image": sexes.index, "age": 40, "sex": sexes.to_numpy()}).to_csv(metadata, index=False)
    unlabelled = tmp_path / "folder"
    run_cli("evaluate.py", f"ckpt={best}", f"images={folder / 'ISIC_2019_Test_Input'}", f"metadata={metadata}",
            *EVALUATE_QUICK, f"out={unlabelled}")
    shares = pd.read_csv(unlabelled / "subgroups.csv").set_index(["attribute", "group"])
    assert shares.loc[("age", "30–49"), "images"] == len(predictions)
    for group, figures in report["attributes"]["sex"]["groups"].items():
        assert shares.loc[("sex", group), "images"] == figures["images"]
    assert "bacc" not in shares.columns and not (unlabelled / "metrics.txt").exists()


@pytest.mark.slow
def test_subgroups_the_metadata_lacks_are_refused_before_writing(trained_2019, run_cli, tmp_path):
    best = trained_2019 / "checkpoints" / "best.ckpt"
    result = run_cli("evaluate.py", f"ckpt={best}", "subgroups=[sex,skin_tone]", *EVALUATE_QUICK,
                     f"out={tmp_path / 'refused'}", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "lesion: error: subgroups: the test split of ") and "gives no image a skin_tone" in result.stderr
    assert not (tmp_path / "refused").exists()
    # Images of a folder have no attributes without metadata=CSV: named ones are refused, auto reports none.
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (40, 40), (200, 120, 90)).save(folder / "a.jpg")
    result = run_cli("evaluate.py", f"ckpt={best}", f"images={folder}", "subgroups=[sex]", *EVALUATE_QUICK,
                     f"out={tmp_path / 'refused-folder'}", check=False)
    assert result.returncode == 2 and "has no patient metadata" in result.stderr
    assert not (tmp_path / "refused-folder").exists()
    none = tmp_path / "none"
    run_cli("evaluate.py", f"ckpt={best}", "subgroups=none", *EVALUATE_QUICK, f"out={none}")
    assert not (none / "subgroups.json").exists() and "Subgroups" not in (none / "metrics.txt").read_text()
