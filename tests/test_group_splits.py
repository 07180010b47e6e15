"""Grouped splits as properties over generated data: no lesion or patient on two sides of any split
the DataModule makes, whatever form the CSVs name images in, and hold-outs of the requested share."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lesion.data.datamodule import IsicDataModule
from lesion.data.layouts import LAYOUTS
from lesion.data.metadata import read_metadata
from lesion.data.readers import read_split
from lesion.data.splits import grouped_holdout, split_indices
from lesion.data.synthetic import write_synthetic
from lesion.errors import LesionError

ID_FORMS = ("bare", "extension", "sub-folder", "windows sub-folder")
PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def name_in_csv(image_id: str, form: str, label: str, suffix: str) -> str:
    """How a user's CSV may name the image ``image_id``."""
    return {"bare": image_id, "extension": f"{image_id}{suffix}", "sub-folder": f"{label}/{image_id}{suffix}",
            "windows sub-folder": f"{label}\\{image_id}{suffix}"}[form]


@st.composite
def grouped_datasets(draw) -> dict:
    """A labelled, grouped image collection: groups of 1–4 images, pure (a lesion) or mixed (a patient)."""
    n_classes = draw(st.integers(2, 3))
    sizes = draw(st.lists(st.integers(1, 4), min_size=6, max_size=14))
    mixed = draw(st.booleans())
    rows, k = [], 0
    for g, size in enumerate(sizes):
        group_class = draw(st.integers(0, n_classes - 1))
        for _ in range(size):
            label = draw(st.integers(0, n_classes - 1)) if mixed else group_class
            rows.append({"id": f"ISIC_{k:07d}", "group": f"P{g:03d}", "label": f"C{label}",
                         "form": draw(st.sampled_from(ID_FORMS)),
                         "suffix": draw(st.sampled_from([".jpg", ".png", ".JPG"]))})
            k += 1
    labels = [r["label"] for r in rows]
    # two classes present, and one with 3 images (what a stratified 3-fold split needs)
    if len(set(labels)) < 2 or max(labels.count(c) for c in set(labels)) < 3:
        rows[0]["label"], rows[1]["label"], rows[2]["label"] = "C0", "C0", "C0"
        rows[-1]["label"] = "C1"
    return {"rows": rows, "val_fraction": draw(st.sampled_from([0.15, 0.2, 0.3, 0.4, 0.5])),
            "test_fraction": draw(st.sampled_from([None, 0.15, 0.25])), "folds": draw(st.integers(2, 3)),
            "seed": draw(st.integers(0, 3))}


def write_dataset(root: Path, rows: list[dict]) -> None:
    """Tiny image files (in a sub-folder per label, as the CSV may name them) and ``labels.csv``."""
    pixels = Image.new("RGB", (8, 8), (180, 120, 90))
    for row in rows:
        folder = root / "images" / row["label"]
        folder.mkdir(parents=True, exist_ok=True)
        pixels.save(folder / f"{row['id']}{row['suffix']}")
    pd.DataFrame({"image": [name_in_csv(r["id"], r["form"], r["label"], r["suffix"]) for r in rows],
                  "diagnosis": [r["label"] for r in rows],
                  "patient": [r["group"] for r in rows], "age": 50}).to_csv(root / "labels.csv", index=False)


def csv_module(root: Path, **options) -> IsicDataModule:
    module = IsicDataModule("csv", str(root), image_size=16, batch_size=2, num_workers=0, cache=False, csv="labels.csv",
                            images="images", label_column="diagnosis", group_column="patient", age_column="age",
                            **options)
    module.setup("fit")
    return module


def sides(module: IsicDataModule) -> list[list[str]]:
    """The image ids of every side of the DataModule's splits (training, validation, a test hold-out)."""
    parts = [module.train_set.ids, module.val_set.ids]
    return parts + [module.test_set.ids] if module.split["test"] == "holdout" else parts


def assert_no_group_on_two_sides(parts: list[list[str]], group_of: dict[str, str]) -> None:
    groups = [{group_of[i] for i in part} for part in parts]
    for a in range(len(groups)):
        for b in range(a + 1, len(groups)):
            assert not groups[a] & groups[b], f"groups on sides {a} and {b}: {sorted(groups[a] & groups[b])}"


@PROPERTY
@given(data=grouped_datasets())
def test_no_group_is_on_two_sides_of_any_split(data):
    rows = data["rows"]
    group_of = {r["id"]: r["group"] for r in rows}
    biggest = pd.Series(list(group_of.values())).value_counts().max()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_dataset(root, rows)
        common = {"seed": data["seed"], "test_fraction": data["test_fraction"]}
        module = csv_module(root, val_fraction=data["val_fraction"], **common)
        assert module.split["grouped_by"] == "lesion"
        assert not read_metadata(module.layout, root, "train", list(group_of))["age"].isna().any()  # same ids
        parts = sides(module)
        assert sorted(i for part in parts for i in part) == sorted(group_of)  # every image on exactly one side
        assert_no_group_on_two_sides(parts, group_of)
        rest = len(rows) - (len(module.test_set) if data["test_fraction"] else 0)
        if data["test_fraction"]:
            assert abs(len(module.test_set) - data["test_fraction"] * len(rows)) <= biggest
        assert abs(len(module.val_set) - data["val_fraction"] * rest) <= biggest
        validated = []
        for k in range(1, data["folds"] + 1):
            fold = csv_module(root, fold=f"{k}/{data['folds']}", **common)
            assert_no_group_on_two_sides(sides(fold), group_of)
            validated += fold.val_set.ids
        assert len(validated) == rest and len(set(validated)) == rest  # the folds partition what is not tested


@st.composite
def grouped_labels(draw) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Class and group of every image (groups of 1–6 images, pure or mixed), a hold-out share and a seed."""
    sizes = draw(st.lists(st.integers(1, 6), min_size=2, max_size=60))
    n_classes = draw(st.integers(2, 5))
    mixed = draw(st.booleans())
    groups = np.repeat(np.arange(len(sizes)), sizes)
    if mixed:
        labels = np.array(draw(st.lists(st.integers(0, n_classes - 1), min_size=len(groups), max_size=len(groups))))
    else:
        per_group = draw(st.lists(st.integers(0, n_classes - 1), min_size=len(sizes), max_size=len(sizes)))
        labels = np.repeat(per_group, sizes)
    fraction = draw(st.floats(0.05, 0.6))
    return labels, groups, fraction, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=200, deadline=None)
@given(case=grouped_labels())
def test_grouped_hold_out_holds_the_requested_share_within_one_group(case):
    labels, groups, fraction, seed = case
    keep, held = split_indices(labels, seed, fraction, None, groups)
    biggest = np.bincount(groups).max()
    assert abs(len(held) - fraction * len(labels)) <= biggest
    assert len(keep) and len(held) and sorted([*keep, *held]) == list(range(len(labels)))
    assert not set(groups[keep]) & set(groups[held])
    again = split_indices(labels, seed, fraction, None, groups)
    assert np.array_equal(again[1], held)  # seeded


def lesions_of_one_class(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """400 lesions of 1–3 images, each of one of 4 imbalanced classes."""
    sizes = rng.integers(1, 4, size=400)
    return np.repeat(rng.choice(4, size=len(sizes), p=[0.6, 0.25, 0.1, 0.05]), sizes), np.repeat(np.arange(400), sizes)


def patients_with_rare_melanoma(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """300 patients of 1–29 images, about 2 % melanoma spread over them (ISIC 2020)."""
    sizes = rng.integers(1, 30, size=300)
    groups = np.repeat(np.arange(300), sizes)
    return (rng.random(len(groups)) < 0.02).astype(int), groups


@pytest.mark.parametrize("make", [lesions_of_one_class, patients_with_rare_melanoma])
def test_grouped_hold_out_is_stratified_as_groups_allow(make):
    """Every class's held-out count is its share to within the most images of it one group holds."""
    labels, groups = make(np.random.default_rng(0))
    per_group = np.zeros((groups.max() + 1, labels.max() + 1))
    np.add.at(per_group, (groups, labels), 1)
    for fraction in (0.1, 0.2, 0.3):
        for seed in range(10):
            _, held = split_indices(labels, seed, fraction, None, groups)
            deviation = np.abs(np.bincount(labels[held], minlength=labels.max() + 1) - fraction * np.bincount(labels))
            assert (deviation <= per_group.max(0)).all(), (fraction, seed, deviation)


def test_grouped_hold_outs_differ_between_seeds():
    groups = np.repeat(np.arange(50), 2)
    labels = np.repeat(np.arange(50) % 3, 2)
    held = {tuple(split_indices(labels, seed, 0.3, None, groups)[1]) for seed in range(10)}
    assert len(held) == 10


def test_the_share_actually_held_out_is_logged(tmp_path, caplog):
    rows = [{"id": f"ISIC_{k:07d}", "group": f"P{k // 3}", "label": f"C{(k // 3) % 2}", "form": "bare", "suffix": ".jpg"}
            for k in range(30)]
    write_dataset(tmp_path, rows)
    with caplog.at_level(logging.INFO, logger="lesion.data.datamodule"):
        module = csv_module(tmp_path, val_fraction=0.3, test_fraction=0.2)
    test_share = len(module.test_set) / 30
    val_share = len(module.val_set) / (30 - len(module.test_set))
    assert f"{test_share:.1%} held out" in caplog.text
    assert f"{val_share:.1%} held out" in caplog.text


@pytest.mark.parametrize("missing", [3, 15, 16, 30])
def test_a_grouping_that_names_few_of_the_images_is_refused_and_a_few_misses_are_groups_of_their_own(
        tmp_path, caplog, missing):
    """Over half of the images without a group id: refused in one line; up to half: each its own group (logged)."""
    rows = [{"id": f"ISIC_{k:07d}", "group": f"P{k // 3}", "label": f"C{k % 2}", "form": "bare", "suffix": ".jpg"}
            for k in range(30)]
    write_dataset(tmp_path, rows)
    frame = pd.read_csv(tmp_path / "labels.csv")
    frame.loc[: missing - 1, "patient"] = ""
    frame.to_csv(tmp_path / "labels.csv", index=False)
    said = f"{missing} of 30 images have no lesion id"
    if missing > 15:
        with pytest.raises(LesionError, match=said) as error:
            csv_module(tmp_path)
        assert "\n" not in str(error.value)
        return
    with caplog.at_level(logging.WARNING):
        module = csv_module(tmp_path)
    assert said in caplog.text and module.split["grouped_by"] == "lesion"


# Official layouts with a grouping file (synthetic copies). ISIC 2018 gets a LesionGroupings CSV,
# once with bare ids and once naming files with their extension.
GROUPED_LAYOUTS = [("isic2018", "bare"), ("isic2018", "extension"), ("isic2019", "bare"), ("isic2020", "bare"),
                   ("ham10000", "bare")]
LESION_GROUPINGS = "ISIC2018_Task3_Training_LesionGroupings.csv"


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """Factory: a synthetic official dataset without validation and test splits, and its image → group map."""
    made = {}

    def make(layout: str, form: str) -> tuple[Path, dict[str, str]]:
        if (layout, form) in made:
            return made[layout, form]
        root = write_synthetic(layout, tmp_path_factory.mktemp(f"{layout}-{form}") / "data", n=90, seed=2)
        spec = LAYOUTS[layout]
        for split in ("val", "test"):
            if split in spec.splits:
                for name in (*spec.splits[split].csv, *(f"{stem}.zip" for stem in spec.splits[split].images)):
                    (root / name).unlink(missing_ok=True)
        ids = read_split(layout, root, "train").ids
        if layout == "isic2018":
            group_of = {i: f"HAM_{k // 3:07d}" for k, i in enumerate(ids)}
            suffix = ".jpg" if form == "extension" else ""
            pd.DataFrame({"image": [f"{i}{suffix}" for i in ids], "lesion_id": list(group_of.values()),
                          "diagnosis_confirm_type": "histo"}).to_csv(root / LESION_GROUPINGS, index=False)
        else:
            grouping = spec.groupings[0]
            frame = pd.read_csv(root / grouping.file, dtype=str).set_index(grouping.id_column)
            lesion = frame[grouping.group_column].reindex(ids)
            group_of = {i: g if isinstance(g, str) and g else f"image:{i}" for i, g in lesion.items()}
        made[layout, form] = root, group_of
        return made[layout, form]

    return make


@pytest.mark.parametrize("layout, form", GROUPED_LAYOUTS)
def test_official_groupings_keep_every_group_on_one_side(official, layout, form):
    root, group_of = official(layout, form)
    assert pd.Series(list(group_of.values())).value_counts().max() > 1  # several images per group
    biggest = pd.Series(list(group_of.values())).value_counts().max()
    for fraction in (0.2, 0.4):
        module = IsicDataModule(layout, str(root), image_size=16, batch_size=2, num_workers=0, cache=False,
                                val_fraction=fraction, test_fraction=0.2)
        module.setup("fit")
        assert module.split["grouped_by"] in ("lesion", "patient") and module.split["test"] == "holdout"
        assert_no_group_on_two_sides(sides(module), group_of)
        rest = len(group_of) - len(module.test_set)
        assert abs(len(module.val_set) - fraction * rest) <= biggest
    for k in (1, 2, 3):
        module = IsicDataModule(layout, str(root), image_size=16, batch_size=2, num_workers=0, cache=False,
                                fold=f"{k}/3", test_fraction=0.2)
        module.setup("fit")
        assert_no_group_on_two_sides(sides(module), group_of)


@pytest.mark.slow  # a command-line run
def test_training_on_a_grouping_that_names_few_images_is_refused_in_one_line(run_cli, tmp_path):
    rows = [{"id": f"ISIC_{k:07d}", "group": f"P{k // 3}", "label": f"C{k % 2}", "form": "bare", "suffix": ".jpg"}
            for k in range(12)]
    write_dataset(tmp_path, rows)
    frame = pd.read_csv(tmp_path / "labels.csv", dtype=str)
    frame.assign(patient=[""] * 10 + ["P0", "P0"]).to_csv(tmp_path / "labels.csv", index=False)
    run_dir = tmp_path / "run"
    result = run_cli("train.py", "dataset=csv", f"dataset.root={tmp_path}", "dataset.csv=labels.csv",
                     "dataset.images=images", "dataset.label_column=diagnosis", "dataset.group_column=patient",
                     "trainer=cpu", "model.backbone=resnet18", "model.weights=none", "dataset.image_size=32",
                     "dataset.num_workers=0", f"hydra.run.dir={run_dir}", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("lesion: error: ") and "10 of 12 images have no lesion id" in lines[-1]
    assert "Traceback" not in result.stderr and not (run_dir / "checkpoints").exists()


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=3, max_size=20), fraction=st.floats(0.05, 0.6),
       seed=st.integers(0, 5), keep_groups=st.integers(1, 3), data=st.data())
def test_a_holdout_leaves_the_kept_side_the_groups_the_next_split_needs(sizes, fraction, seed, keep_groups, data):
    """A test hold-out is split again (validation, folds): its kept side keeps ``keep_groups`` whole groups, e.g. with
    patients of 1, 1, 1 and 10 images a 20 % hold-out must not take the three small ones."""
    groups = np.repeat(np.arange(len(sizes)), sizes)
    labels = np.array(data.draw(st.lists(st.integers(0, 2), min_size=len(groups), max_size=len(groups))))
    if len(sizes) <= keep_groups:
        with pytest.raises(LesionError, match="cannot fill this hold-out"):
            grouped_holdout(labels, groups, fraction, seed, keep_groups=keep_groups)
        return
    keep, held = grouped_holdout(labels, groups, fraction, seed, keep_groups=keep_groups)
    assert len(set(groups[keep])) >= keep_groups and len(held) > 0
    assert set(groups[keep]).isdisjoint(groups[held]) and sorted([*keep, *held]) == list(range(len(groups)))


def test_three_single_image_patients_and_one_large_leave_two_patients_for_validation():
    groups = np.repeat(np.arange(4), [1, 1, 1, 10])
    labels = np.zeros(13, dtype=int)
    labels[0] = 1
    for seed in range(4):
        keep, _ = grouped_holdout(labels, groups, 0.2, seed, keep_groups=2)
        assert len(set(groups[keep])) >= 2
