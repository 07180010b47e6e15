"""Stacking (stack.py): out-of-fold scores of a fold sweep, patient-relative features, the leak refusal, trees on the
image models' folds, the submission, and the command end to end."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from lesion.data.datamodule import ids_digest
from lesion.data.layouts import LAYOUTS
from lesion.data.readers import read_split
from lesion.data.splits import grouped_folds
from lesion.data.synthetic import write_synthetic
from lesion.errors import LesionError
from lesion.option_reference import option_rows
from lesion.stack.features import patient_relative
from lesion.stack.oof import check_coverage, fold_order
from lesion.stack.options import OPTIONS, check_stack
from lesion.stack.report import submission
from lesion.stack.tabular import available_columns, read_tabular, select_columns, training_only
from lesion.stack.trees import ESTIMATORS, cross_fit, fit_predict

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SMALL_TREES = {"name": "lightgbm", "rounds": 20, "learning_rate": 0.3, "depth": 3, "leaves": 7, "min_child_samples": 2,
               "subsample": 1.0, "colsample": 1.0, "l2": 0.0}


def _record(k: int, n: int, seed: int = 0) -> dict:
    return {"validation": "fold", "fold": f"{k}/{n}", "seed": seed}


# --- the folds of a sweep ---------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(st.integers(2, 6).flatmap(lambda n: st.tuples(st.just(n), st.lists(st.integers(1, n), min_size=1, max_size=8))))
def test_a_sweep_is_accepted_exactly_when_it_holds_every_fold_once(case):
    n, folds = case
    paths = [Path(f"sweep/{j}/checkpoints/best.ckpt") for j in range(len(folds))]
    if sorted(folds) == list(range(1, n + 1)):
        assert fold_order([_record(k, n) for k in folds], paths) == folds
        return
    with pytest.raises(LesionError) as refused:
        fold_order([_record(k, n) for k in folds], paths)
    again = [k for j, k in enumerate(folds) if k in folds[:j]]  # the first fold named a second time is reported
    expected = f"fold {again[0]}/{n} twice" if again else "missing"
    assert str(refused.value).startswith("sweep: ") and expected in str(refused.value)


def test_models_of_other_folds_k_seeds_or_validation_splits_are_refused():
    paths = [Path("a.ckpt"), Path("b.ckpt"), Path("c.ckpt")]
    cases = {
        "folds of different K": [_record(1, 3), _record(2, 3), _record(3, 4)],
        "cut its folds with seed 1 and a.ckpt with seed 0": [_record(1, 3), _record(2, 3), _record(3, 3, seed=1)],
        "c.ckpt was validated on a hold-out, not on a fold": [_record(1, 3), _record(2, 3),
                                                                             {"validation": "holdout", "fold": None,
                                                                              "seed": 0}],
        "c.ckpt was validated on an unrecorded split": [_record(1, 3), _record(2, 3), None],
    }
    for message, records in cases.items():
        with pytest.raises(LesionError, match=message):
            fold_order(records, paths)


@settings(max_examples=40, deadline=None)
@given(st.integers(6, 40).flatmap(lambda n: st.tuples(st.permutations(range(n)), st.integers(2, 5),
                                                       st.sampled_from(["as cut", "dropped", "twice", "foreign"]))))
def test_out_of_fold_scores_cover_every_training_image_exactly_once(case):
    order, n_folds, change = case
    pool = [f"ISIC_{i:07d}" for i in range(len(order))]
    validated = [[pool[i] for i in order[k::n_folds]] for k in range(n_folds)]
    paths = [Path(f"{k}.ckpt") for k in range(n_folds)]
    if change == "as cut":
        fold = check_coverage(pool, validated, paths)
        assert sorted(fold.tolist()) == sorted(k for k, images in enumerate(validated, 1) for _ in images)
        assert all(pool[row] in validated[k - 1] for row, k in enumerate(fold))
        return
    if change == "dropped":
        validated[0] = validated[0][1:]
    elif change == "twice":
        validated[1] = [*validated[1], validated[0][0]]
    else:
        validated[0] = [*validated[0], "ISIC_9999999"]
    with pytest.raises(LesionError, match="more than once" if change == "twice" else "unscored"):
        check_coverage(pool, validated, paths)


# --- features -----------------------------------------------------------------------------------------------------

_VALUE = st.one_of(st.none(), st.floats(-1e3, 1e3, allow_nan=False).map(lambda v: round(v, 3)))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("pqrs"), _VALUE, _VALUE), min_size=1, max_size=30), st.randoms())
def test_patient_relative_features_are_the_per_patient_z_rank_and_count_in_any_row_order(rows, random):
    values = pd.DataFrame({"x": [np.nan if r[1] is None else r[1] for r in rows],
                           "y": [np.nan if r[2] is None else r[2] for r in rows]})
    patients = [r[0] for r in rows]
    found = patient_relative(values, patients)
    for column in ("x", "y"):
        for row, patient in enumerate(patients):
            known = np.array([v for v, p in zip(values[column], patients) if p == patient and not math.isnan(v)])
            x = values[column][row]
            mean, sd = (known.mean(), known.std()) if len(known) else (np.nan, np.nan)
            z = (x - mean) / sd if len(known) and known.max() > known.min() else np.nan
            assert found[f"{column} patient z"][row] == pytest.approx(z, nan_ok=True, abs=1e-9)
            assert found[f"{column} patient diff"][row] == pytest.approx(x - mean, nan_ok=True, abs=1e-9)
            below = (known < x).sum() + ((known == x).sum() + 1) / 2
            assert found[f"{column} patient rank"][row] == pytest.approx(below / len(known) if not math.isnan(x)
                                                                          else np.nan, nan_ok=True)
    assert found["patient lesions"].tolist() == [patients.count(p) for p in patients]

    shuffled = list(range(len(rows)))
    random.shuffle(shuffled)
    again = patient_relative(values.iloc[shuffled].reset_index(drop=True), [patients[k] for k in shuffled])
    pd.testing.assert_frame_equal(again, found.iloc[shuffled].reset_index(drop=True))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_no_training_only_column_is_ever_available(layout):
    assert set(available_columns(LAYOUTS[layout]).names).isdisjoint(training_only(LAYOUTS[layout]))


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(sorted(LAYOUTS)).flatmap(lambda name: st.tuples(st.just(name),
                                                                       st.sampled_from(training_only(LAYOUTS[name])))))
def test_a_training_only_column_as_a_feature_is_refused_as_a_leak(case):
    layout, column = case
    available = list(available_columns(LAYOUTS[layout]).names)
    with pytest.raises(LesionError, match=f"features.columns: '{column}' is known only for the training images"):
        select_columns(LAYOUTS[layout], [*available[:2], column])


def test_isic2024_leaks_are_its_label_and_the_ten_columns_its_test_csv_lacks():
    assert set(training_only(LAYOUTS["isic2024"])) == {
        "target", "lesion_id", "iddx_full", "iddx_1", "iddx_2", "iddx_3", "iddx_4", "iddx_5", "mel_mitotic_index",
        "mel_thick_mm", "tbp_lv_dnn_lesion_confidence"}
    assert {"tbp_lv_areaMM2", "age", "site", "tbp_lv_location"} <= set(available_columns(LAYOUTS["isic2024"]).names)


def test_isic2024_columns_are_read_as_published_numbers_and_categories(tmp_path):
    layout = LAYOUTS["isic2024"]
    root = write_synthetic("isic2024", tmp_path / "data", n=40, seed=0)
    ids = read_split(layout, root, "train").ids[::-1]
    columns = available_columns(layout)
    found = read_tabular(layout, root, "train", ids, columns)
    assert list(found.columns) == list(columns.names) and list(found.index) == ids
    published = pd.read_csv(root / "train-metadata.csv", dtype=str, keep_default_na=False).set_index("isic_id").loc[ids]
    for column in columns.numeric[1:]:  # age: lesion.data.metadata's cleaned age_approx
        assert found[column].dtype == np.float64
        np.testing.assert_allclose(found[column], pd.to_numeric(published[column].replace("", np.nan)))
    for column in columns.categorical[2:]:  # sex, site: the cleaned metadata
        assert found[column].tolist() == [value or None for value in published[column]]


# --- trees on the image models' folds --------------------------------------------------------------------------------

@settings(max_examples=6, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_trees_validate_on_the_image_models_patient_folds_and_never_see_the_rows_they_score(seed):
    rng = np.random.default_rng(seed)
    patients = np.array([f"P{k}" for k in rng.integers(0, 25, 120)], dtype=object)
    labels = rng.integers(0, 2, 120)
    x = np.column_stack([labels + rng.normal(0, 1, 120), rng.normal(0, 1, 120)])
    folds = np.zeros(120, dtype=np.int64)
    for k, held in enumerate(grouped_folds(labels, patients, 3, seed), 1):  # the image models' folds
        folds[held] = k
    fit = cross_fit(SMALL_TREES, x, labels, folds, x[:5], [0, 1], 2)
    assert [rows.fold for rows in fit.folds] == [1, 2, 3]
    for rows in fit.folds:
        assert sorted([*rows.train, *rows.val]) == list(range(120))
        assert set(rows.val) == set(np.flatnonzero(folds == rows.fold))
        assert set(patients[rows.train]).isdisjoint(patients[rows.val])
        # Relabelling the rows a fold validates on changes nothing the fold's trees predict for them.
        flipped = labels.copy()
        flipped[rows.val] = 1 - flipped[rows.val]
        again = cross_fit(SMALL_TREES, x, flipped, folds, x[:5], [0, 1], 2)
        np.testing.assert_allclose(again.oof[rows.val], fit.oof[rows.val])
    assert np.allclose(fit.oof.sum(1), 1) and np.allclose(fit.test.sum(1), 1)
    assert fit.importance.shape == (2,) and fit.importance.sum() == pytest.approx(1)


OWN_PARAMETERS = {"lightgbm": {"leaves": 7, "min_child_samples": 2}, "xgboost": {"min_child_weight": 1.0},
                  "catboost": {}}


@pytest.mark.parametrize("library", sorted(ESTIMATORS))
def test_every_tree_library_gives_every_class_a_probability_even_one_without_training_rows(library):
    pytest.importorskip(library)
    rng = np.random.default_rng(0)
    labels = rng.choice([0, 1, 3], 90)  # class 2 of 4 has no training row (ISIC 2019's UNK)
    x = np.column_stack([labels + rng.normal(0, 0.5, 90), rng.normal(0, 1, 90)])
    x[::7, 1] = np.nan  # missing values are each library's own business
    options = {**SMALL_TREES, "name": library, **OWN_PARAMETERS[library]}
    (probs, none), importance = fit_predict(options, 0, x, labels, [x[:10], x[:0]], 4)
    assert probs.shape == (10, 4) and none.shape == (0, 4)
    assert np.allclose(probs.sum(1), 1) and (probs[:, 2] == 0).all()
    assert (probs.argmax(1) == labels[:10]).mean() > 0.8
    assert importance.sum() == pytest.approx(1) and importance[0] > importance[1]


@settings(max_examples=20, deadline=None)
@given(st.lists(st.sampled_from(("MEL", "NV", "BCC", "AKIEC")), min_size=2, max_size=4, unique=True),
       st.integers(0, 12))
def test_the_submission_has_one_row_per_test_image_in_the_challenge_format(classes, n):
    ids = [f"ISIC_{k:07d}" for k in range(n)]
    probs = np.random.default_rng(n).dirichlet(np.ones(len(classes)), n).reshape(n, len(classes))
    table = submission(ids, probs, classes, "isic_id")
    expected = ["isic_id", "target"] if len(classes) == 2 else ["isic_id", *classes]
    assert list(table.columns) == expected and table["isic_id"].tolist() == ids
    values = table[expected[1:]].to_numpy()
    np.testing.assert_allclose(values, probs[:, 1:] if len(classes) == 2 else probs)


# --- options --------------------------------------------------------------------------------------------------------

def _composed(overrides: list[str]) -> dict:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return OmegaConf.to_container(compose("stack", overrides=["sweep=x", *overrides]), resolve=False)


@pytest.mark.parametrize("trees", sorted(path.stem for path in (CONF / "stack").glob("*.yaml")))
def test_every_key_of_every_stack_config_is_a_declared_option_with_a_meaning(trees):
    config = _composed([f"stack={trees}"])
    rows = {row.key: row for row in option_rows(OPTIONS, config)}

    def keys(values: dict, prefix: str = "") -> list[str]:
        return [k for key, value in values.items() if key != "hydra"
                for k in (keys(value, f"{prefix}{key}.") if isinstance(value, dict) and value else [f"{prefix}{key}"])]

    assert [key for key in keys(config) if key not in rows] == []
    assert [key for key, row in rows.items() if not row.meaning.strip()] == []
    pytest.importorskip(trees)  # xgboost and catboost are extras
    assert check_stack(config | {"sweep": str(REPO), "out": "o"})["stack"]["name"] == trees


def test_a_tree_library_that_is_not_installed_is_refused_with_its_install_command(monkeypatch):
    config = _composed(["stack=xgboost"]) | {"sweep": str(REPO), "out": "o"}
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(LesionError, match=r"stack.name: xgboost is not installed — pip install 'lesion\[xgboost\]'"):
        check_stack(config)


# --- the command end to end -----------------------------------------------------------------------------------------

TINY = ["trainer=cpu", "model=baseline", "model.backbone=resnet18", "model.weights=none", "dataset.image_size=32",
        "dataset.batch_size=8", "dataset.num_workers=0", "trainer.max_epochs=1", "logger=csv"]
QUIET = ["num_workers=0", "seeds=[0,1]", "stack.rounds=20", "stack.min_child_samples=2"]


@pytest.fixture(scope="module")
def sweeps(run_cli, tmp_path_factory) -> dict[str, Path]:
    """A 3-fold sweep on synthetic ISIC 2020 (patients, age, sex, site), and a fold model of other data."""
    base = tmp_path_factory.mktemp("stack")
    run_cli("train.py", "-m", "dataset=synthetic2020", "dataset.synthetic_n=60", "dataset.fold=1/3,2/3,3/3", *TINY,
            f"hydra.sweep.dir={base / 'sweep'}")
    run_cli("train.py", "dataset=synthetic2020", "dataset.synthetic_n=40", "dataset.fold=2/3", *TINY,
            f"hydra.run.dir={base / 'other'}")
    return {"sweep": base / "sweep", "other": base / "other"}


def _linked_sweep(folder: Path, jobs: dict[str, Path]) -> Path:
    """A sweep folder whose job ``name`` holds a hard link of checkpoint ``jobs[name]``."""
    for name, checkpoint in jobs.items():
        (folder / name / "checkpoints").mkdir(parents=True)
        os.link(checkpoint, folder / name / "checkpoints" / "best.ckpt")
    return folder


def _best(run: Path) -> Path:
    return run / "checkpoints" / "best.ckpt"


@pytest.mark.slow
def test_stack_writes_out_of_fold_scores_of_every_training_image_and_a_submission_of_every_test_image(
        sweeps, run_cli, tmp_path):
    out = tmp_path / "out"
    run_cli("stack.py", f"sweep={sweeps['sweep']}", f"out={out}", *QUIET)
    report = json.loads((out / "metrics.json").read_text())
    oof, sent = pd.read_csv(out / "oof.csv"), pd.read_csv(out / "submission.csv")
    training = read_split("isic2020", _root(sweeps), "train").ids

    # Every training image once: out of fold, or a test image of the submission (a patient-grouped hold-out).
    assert oof["image_name"].is_unique and sent["image_name"].is_unique
    assert sorted([*oof["image_name"], *sent["image_name"]]) == sorted(training)
    assert list(sent.columns) == ["image_name", "target"] and sent["target"].between(0, 1).all()
    assert report["test"]["images"] == len(sent) and report["oof"]["images"] == len(oof)

    # Fold k's rows are exactly the images its image model validated on (the digest training recorded); the
    # trees of fold k trained on the other folds' rows, none of their patients among fold k's.
    for k, fold in enumerate(report["folds"], 1):
        split = _stored_split(_best(sweeps["sweep"] / str(k - 1)))
        rows = oof[oof["fold"] == k]
        assert ids_digest(rows["image_name"].tolist()) == split["val_ids_sha256"]
        assert fold["val_images"] == len(rows) and fold["train_images"] == len(oof) - len(rows)
        assert set(rows["patient"]).isdisjoint(oof.loc[oof["fold"] != k, "patient"])
        assert set(fold["stacked"]) == {"pauc80", "auc", "top15"}  # patients known: the top-15 figure too
    assert np.allclose(oof[["stacked/benign", "stacked/melanoma"]].sum(1), 1)

    importances = pd.read_csv(out / "importances.csv")
    assert sorted(importances["feature"]) == sorted(report["features"])
    assert {"image score", "age", "site=torso", "image score patient z", "patient lesions"} <= set(report["features"])
    assert (out / "importances.png").stat().st_size > 0 and (out / ".hydra" / "config.yaml").is_file()


def _root(sweeps: dict[str, Path]) -> Path:
    return Path(_stored_dataset(_best(sweeps["sweep"] / "0"))["root"])


def _stored_split(checkpoint: Path) -> dict:
    import torch

    return torch.load(checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]["split"]


def _stored_dataset(checkpoint: Path) -> dict:
    import torch

    return torch.load(checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]["dataset"]


def _refusals(sweeps: dict[str, Path], folder: Path) -> dict[str, tuple[list[str], str]]:
    job = {k: _best(sweeps["sweep"] / str(k)) for k in range(3)}
    missing = _linked_sweep(folder / "missing", {"0": job[0], "1": job[1]})
    twice = _linked_sweep(folder / "twice", {"0": job[0], "1": job[1], "2": job[2], "3": job[0]})
    other = _linked_sweep(folder / "other", {"0": job[0], "1": _best(sweeps["other"]), "2": job[2]})
    return {
        "missing fold": ([f"sweep={missing}"], "sweep: fold 3/3 missing (2 of 3 folds found) — "),
        "fold twice": ([f"sweep={twice}"], f"sweep: fold 1/3 twice: {_best(twice / '0')} and {_best(twice / '3')} "),
        "other data": ([f"sweep={other}"], f"sweep: {_best(other / '1')} was trained on other data than "),
        "leak": ([f"sweep={sweeps['sweep']}", "features.columns=[age,target]"],
                 "features.columns: 'target' is known only for the training images of isic2020 (target): "),
    }


@pytest.mark.slow
def test_a_sweep_with_a_missing_or_repeated_fold_a_model_of_other_data_or_a_leak_is_refused_writing_nothing(
        sweeps, run_cli, tmp_path):
    for name, (overrides, line) in _refusals(sweeps, tmp_path / "sweeps").items():
        out = tmp_path / name
        result = run_cli("stack.py", *overrides, f"out={out}", *QUIET, check=False)
        assert result.returncode == 2, (name, result.stderr[-2000:])
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"lesion: error: {line}"), (name, last)
        assert "Traceback" not in result.stderr and not out.exists(), name


@pytest.fixture(scope="module")
def ham10000_sweep(run_cli, tmp_path_factory) -> Path:
    """A 2-fold sweep on synthetic HAM10000: seven classes, images grouped by lesion (no patient ids)."""
    sweep = tmp_path_factory.mktemp("stack-ham") / "sweep"
    run_cli("train.py", "-m", "dataset=synthetic_ham10000", "dataset.synthetic_n=60", "dataset.fold=1/2,2/2", *TINY,
            f"hydra.sweep.dir={sweep}")
    return sweep


@pytest.mark.slow
def test_more_classes_are_stacked_without_patient_features_and_submitted_one_column_per_class(
        ham10000_sweep, run_cli, tmp_path):
    out = tmp_path / "out"
    run_cli("stack.py", f"sweep={ham10000_sweep}", f"out={out}", *QUIET)
    report = json.loads((out / "metrics.json").read_text())
    classes = report["classes"]
    sent = pd.read_csv(out / "submission.csv")
    assert len(classes) == 7 and list(sent.columns) == ["image_id", *classes]
    assert len(sent) == report["test"]["images"] and sent["image_id"].is_unique
    np.testing.assert_allclose(sent[classes].sum(1), 1)
    assert set(report["oof"]["stacked"]) == {"bacc", "auc_macro"}
    assert [f"image {name}" for name in classes] == report["features"][:7]
    assert not any("patient" in name for name in report["features"])
    assert "ham10000: groups its images by lesion, not by patient: no patient-relative features" in (
        out / "stack.log").read_text()
