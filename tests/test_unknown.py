"""ISIC 2019's unknown class (UNK): UNK test images in the official layout, route A (an extra folder of UNK training
images), route B (``unknown_class``: flagged images predicted UNK), the submission, and the refusals."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import balanced_accuracy_score, confusion_matrix

from lesion.checkpoint import store_entry
from lesion.data.datamodule import IsicDataModule
from lesion.data.layouts import LAYOUTS
from lesion.data.readers import read_split
from lesion.data.synthetic import write_synthetic
from lesion.evaluate.ood import CHECKPOINT_KEY, SCORE, OodThreshold, predicted_as
from lesion.evaluate.report import evaluation_report

REPO = Path(__file__).resolve().parents[1]
ISIC2019 = LAYOUTS["isic2019"]
CLASSES = list(ISIC2019.classes)
UNK = CLASSES.index("UNK")
TINY = ["trainer=cpu", "model=baseline", "model.backbone=resnet18", "model.weights=none", "dataset.image_size=32",
        "dataset.batch_size=8", "dataset.num_workers=0"]
N_UNKNOWN, N_EXTRA = 8, 10


def _benchmark():
    """benchmarks/unknown.py, whose helpers write the UNK test images and the other unknown kind."""
    spec = importlib.util.spec_from_file_location("unknown_benchmark", REPO / "benchmarks" / "unknown.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A synthetic ISIC 2019 set whose test split holds N_UNKNOWN UNK images, and an extra folder of UNK images."""
    base = tmp_path_factory.mktemp("unknown")
    root = write_synthetic("isic2019", base / "isic2019", n=60, seed=0)
    benchmark = _benchmark()
    benchmark.add_unknown_test_images(root, N_UNKNOWN, seed=0)
    benchmark.write_other_kind(base / "extra", N_EXTRA, seed=0)
    return root


@pytest.mark.parametrize("extracted", [False, True])
def test_added_unk_images_are_read_as_unk_in_the_official_test_layout(tmp_path, as_folders, extracted):
    root = write_synthetic("isic2019", tmp_path / "zipped", n=60, seed=0)
    before = read_split(ISIC2019, root, "test")
    if extracted:
        root = as_folders(root, tmp_path / "extracted")
    ids = _benchmark().add_unknown_test_images(root, N_UNKNOWN, seed=0)
    after = read_split(ISIC2019, root, "test")
    assert after.ids == before.ids + ids
    assert np.array_equal(after.labels, np.r_[before.labels, [UNK] * N_UNKNOWN])
    every = {i for split in ("train", "test") for i in read_split(ISIC2019, root, split).ids}
    assert len(every) == len(before.ids) + N_UNKNOWN + len(read_split(ISIC2019, root, "train").ids)  # new ids
    truth = pd.read_csv(root / "ISIC_2019_Test_GroundTruth.csv")
    assert list(truth.columns) == ["image", *CLASSES]
    metadata = pd.read_csv(root / "ISIC_2019_Test_Metadata.csv")
    assert metadata["image"].tolist() == after.ids
    for image_id in ids:
        assert after.images.read(image_id).mode == "RGB"


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@settings(max_examples=60, deadline=None)
@given(st.integers(2, 40).flatmap(lambda n: st.tuples(
    st.lists(st.lists(st.floats(0.01, 1), min_size=len(CLASSES), max_size=len(CLASSES)), min_size=n, max_size=n),
    st.lists(st.booleans(), min_size=n, max_size=n),
    st.lists(st.integers(0, len(CLASSES) - 1), min_size=n, max_size=n))))
def test_flagged_images_are_predicted_unk_and_bacc_is_the_recall_over_the_classes_present(drawn):
    raw, flags, labels = (np.array(v) for v in drawn)
    probs = predicted_as(raw / raw.sum(1, keepdims=True), flags, UNK)
    assert (probs[flags].argmax(1) == UNK).all() and (probs[flags].max(1) == 1).all()
    assert np.allclose(probs[~flags], raw[~flags] / raw[~flags].sum(1, keepdims=True))
    report = evaluation_report(probs, labels, CLASSES, n_bootstrap=1)
    predicted = probs.argmax(1)
    assert report["bacc"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert np.array_equal(report["confusion"], confusion_matrix(labels, predicted, labels=range(len(CLASSES))))


def test_an_extra_folder_of_unk_images_adds_them_to_the_training_split_only(data):
    extra = data.parent / "extra"
    alone = IsicDataModule("isic2019", str(data), image_size=32, num_workers=0)
    alone.setup("fit")
    joined = IsicDataModule("isic2019", str(data), image_size=32, num_workers=0,
                            extra=[{"layout": "folder", "root": str(extra)}])
    joined.setup("fit")
    assert alone.class_counts(alone.train_set)["UNK"] == 0
    assert joined.class_counts(joined.train_set) == {**alone.class_counts(alone.train_set), "UNK": N_EXTRA}
    assert joined.split == alone.split and joined.test_set.ids == alone.test_set.ids
    assert joined.class_counts(joined.test_set)["UNK"] == N_UNKNOWN
    assert joined.sources["folder"]["added"] == {**dict.fromkeys(CLASSES, 0), "UNK": N_EXTRA}


@pytest.fixture(scope="module")
def route_a(data, run_cli, tmp_path_factory) -> Path:
    """One epoch with the extra UNK folder (balance=class_weight, so UNK gets a weight of its count)."""
    run_dir = tmp_path_factory.mktemp("route-a")
    run_cli("train.py", "dataset=isic2019", f"dataset.root={data}",
            f"dataset.extra=[{{layout:folder,root:{data.parent / 'extra'}}}]", "balance=class_weight",
            "trainer.max_epochs=1", *TINY, f"hydra.run.dir={run_dir}")
    return run_dir


@pytest.mark.slow
def test_route_a_trains_the_unk_class_from_the_folder_and_reports_the_source(route_a):
    report = json.loads((route_a / "balance.json").read_text())
    assert report["sources"]["folder"]["added"]["UNK"] == N_EXTRA
    assert report["sources"]["folder"]["dropped_validation_or_test_lesion"] == 0
    weights = report["class_weights"]
    assert np.isfinite(weights[UNK]) and weights[UNK] > 0  # a class the training split counts


def with_threshold(ckpt: Path, threshold: float, dest: Path) -> Path:
    """A copy of ``ckpt`` whose stored out-of-distribution threshold is ``threshold``."""
    shutil.copy(ckpt, dest)
    store_entry(dest, CHECKPOINT_KEY, OodThreshold(SCORE, threshold, 0.95, 10).as_dict())
    return dest


@pytest.mark.slow
def test_route_b_predicts_flagged_images_as_unk_in_every_output(route_a, run_cli, tmp_path):
    ckpt = route_a / "checkpoints" / "best.ckpt"
    plain = tmp_path / "plain"
    run_cli("evaluate.py", f"ckpt={ckpt}", f"out={plain}", "gradcam.n=0", "plots=false", "bootstrap=10",
            "num_workers=0")
    scores = pd.read_csv(plain / "predictions.csv")["ood_score"]
    # A threshold that flags about half the test images, so that both kinds of row are checked.
    ckpt = with_threshold(ckpt, float(np.median(scores)), tmp_path / "half.ckpt")
    out = tmp_path / "unknown"
    run_cli("evaluate.py", f"ckpt={ckpt}", "unknown_class=UNK", f"out={out}", "gradcam.n=0", "plots=false",
            "bootstrap=10", "num_workers=0")
    table, before = pd.read_csv(out / "predictions.csv"), pd.read_csv(plain / "predictions.csv")
    flagged = table["unknown"].to_numpy(bool)
    assert 0 < flagged.sum() < len(table)
    probs = table[CLASSES].to_numpy()
    assert (table["prediction"] == [CLASSES[k] for k in probs.argmax(1)]).all()
    assert (probs[flagged] == np.eye(len(CLASSES))[UNK]).all()
    assert np.allclose(probs[~flagged], before[CLASSES].to_numpy()[~flagged], atol=1e-6)
    assert np.allclose(table["ood_score"], before["ood_score"], atol=1e-5)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bacc"] == pytest.approx(balanced_accuracy_score(table["label"], table["prediction"]))
    assert metrics["confusion"] == confusion_matrix(table["label"], table["prediction"], labels=CLASSES).tolist()
    assert metrics["ood/unknown"] == flagged.sum() and metrics["ood/unknown_class"] == "UNK"
    assert metrics["support/UNK"] == N_UNKNOWN
    subgroups = json.loads((out / "subgroups.json").read_text())
    assert subgroups["all"]["bacc"] == pytest.approx(metrics["bacc"])
    submission = pd.read_csv(out / "submission.csv")
    assert list(submission.columns) == ["image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    assert submission["image"].tolist() == table["image"].tolist()
    assert np.array_equal(submission[CLASSES].to_numpy(), probs)


@pytest.mark.slow
def test_route_a_submission_gives_the_trained_unk_probability(route_a, run_cli, tmp_path):
    out = tmp_path / "out"
    run_cli("evaluate.py", f"ckpt={route_a / 'checkpoints' / 'best.ckpt'}", f"out={out}", "gradcam.n=0",
            "plots=false", "bootstrap=10", "num_workers=0", "subgroups=none")
    table, submission = pd.read_csv(out / "predictions.csv"), pd.read_csv(out / "submission.csv")
    assert list(submission.columns) == ["image", *CLASSES]
    assert np.array_equal(submission[CLASSES].to_numpy(), table[CLASSES].to_numpy())
    assert (submission["UNK"] > 0).all()  # a trained class: every image has some probability of it


def without_threshold(ckpt: Path, dest: Path) -> Path:
    contents = torch.load(ckpt, weights_only=True)
    del contents[CHECKPOINT_KEY]
    torch.save(contents, dest)
    return dest


@pytest.mark.slow
@pytest.mark.parametrize("case, message", [
    ("not a class", "unknown_class: 'SK' is not one of the model's classes"),
    ("no threshold", "unknown_class: {ckpt} stores no out-of-distribution threshold"),
    ("test-time views of folder images", "unknown_class: an ensemble's or test-time views' threshold"),
    ("onnx", "unknown_class: scores images by the energy of the net's logits, and runtime=onnx"),
])
def test_unknown_class_is_refused_in_one_line_before_anything_is_written(data, route_a, run_cli, tmp_path, case,
                                                                          message):
    ckpt = route_a / "checkpoints" / "best.ckpt"
    options = {"not a class": [f"ckpt={ckpt}", "unknown_class=SK"],
               "no threshold": [f"ckpt={without_threshold(ckpt, tmp_path / 'old.ckpt')}", "unknown_class=UNK"],
               "test-time views of folder images": [f"ckpt={ckpt}", "unknown_class=UNK", "tta=true",
                                                    f"images={data.parent / 'extra' / 'UNK'}"],
               "onnx": [f"ckpt={ckpt}", "unknown_class=UNK", "runtime=onnx"]}[case]
    out = tmp_path / "out"
    result = run_cli("evaluate.py", *options, f"out={out}", "num_workers=0", check=False)
    assert result.returncode == 2, result.stderr[-800:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"lesion: error: {message.format(ckpt=tmp_path / 'old.ckpt')}"), result.stderr[-800:]
    assert "Traceback" not in result.stderr and not out.exists()


def test_an_extra_folder_naming_none_of_the_classes_is_refused_before_any_work(data, run_cli, tmp_path):
    folder = tmp_path / "other"
    shutil.copytree(data.parent / "extra" / "UNK", folder / "warts")
    run_dir = tmp_path / "run"
    result = run_cli("train.py", "dataset=isic2019", f"dataset.root={data}",
                     f"dataset.extra=[{{layout:folder,root:{folder}}}]", *TINY, f"hydra.run.dir={run_dir}", check=False)
    assert result.returncode == 2, result.stderr[-800:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"lesion: error: dataset.extra[0].root: {folder}'s class folders (warts) name none of the "
                           "classes (MEL, NV, BCC, AK, BKL, DF, VASC, SCC, UNK)"), result.stderr[-800:]
    assert not run_dir.exists()
