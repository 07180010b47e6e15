"""``stack.py images= metadata=``: the unlabelled images of a challenge (ISIC 2024's ``test-image.hdf5``) scored
by the fold models, stacked with their own metadata, and submitted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lesion.data.readers import read_csv

TINY = ["trainer=cpu", "model=baseline", "model.backbone=resnet18", "model.weights=none", "dataset.image_size=32",
        "dataset.batch_size=8", "dataset.num_workers=0", "trainer.max_epochs=1", "logger=csv"]
QUIET = ["num_workers=0", "seeds=[0]", "stack.rounds=10", "stack.min_child_samples=2"]


@pytest.fixture(scope="module")
def sweep(run_cli, tmp_path_factory) -> tuple[Path, Path]:
    """A 2-fold sweep on synthetic ISIC 2024, and the folder of its data."""
    folder = tmp_path_factory.mktemp("stack-2024") / "sweep"
    run_cli("train.py", "-m", "dataset=synthetic2024", "dataset.synthetic_n=80", "dataset.fold=1/2,2/2", *TINY,
            f"hydra.sweep.dir={folder}")
    stored = torch.load(folder / "0" / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    return folder, Path(stored["hyper_parameters"]["dataset"]["root"])


@pytest.mark.slow
def test_the_test_images_are_scored_as_evaluate_scores_them_and_submitted_with_their_own_metadata(
        sweep, run_cli, tmp_path):
    folder, root = sweep
    images, metadata = root / "test-image.hdf5", root / "test-metadata.csv"
    out = tmp_path / "stack"
    run_cli("stack.py", f"sweep={folder}", f"images={images}", f"metadata={metadata}", f"out={out}", *QUIET)
    sent, predicted = pd.read_csv(out / "submission.csv"), pd.read_csv(out / "predictions.csv")
    listed = read_csv(metadata, "test metadata")
    assert list(sent.columns) == ["isic_id", "target"] and sent["target"].between(0, 1).all()
    assert sorted(sent["isic_id"]) == sorted(listed["isic_id"])
    # Each image's patient is the one its metadata row names.
    assert dict(zip(predicted["isic_id"], predicted["patient"])) == dict(zip(listed["isic_id"], listed["patient_id"]))

    # The image scores are the fold models' mean, exactly as evaluate.py predicts the same file.
    evaluated = tmp_path / "evaluate"
    run_cli("evaluate.py", f"ckpt={folder}", f"images={images}", f"out={evaluated}", "num_workers=0", "gradcam.n=0")
    expected = pd.read_csv(evaluated / "predictions.csv").set_index("isic_id")
    mine = predicted.set_index("isic_id").loc[expected.index]
    assert np.allclose(mine["image/malignant"], expected["malignant"], atol=1e-6)

    report = json.loads((out / "metrics.json").read_text())
    assert report["predicted"] == {"images": len(sent), "source": str(images)}
    # The hold-out of training patients is still scored, the top-15 figure with it.
    assert set(report["test"]["stacked"]) == {"pauc80", "auc", "top15"}
    assert 0 <= report["oof"]["stacked"]["top15"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize("given, line", [
    ("images", "lesion: error: images: come without their metadata, and the trees read tabular or patient features"),
    ("metadata", "lesion: error: metadata: is the metadata of images=, and no images= is given"),
])
def test_images_without_their_metadata_or_metadata_alone_are_refused_writing_nothing(
        sweep, run_cli, tmp_path, given, line):
    folder, root = sweep
    path = root / ("test-image.hdf5" if given == "images" else "test-metadata.csv")
    out = tmp_path / "out"
    result = run_cli("stack.py", f"sweep={folder}", f"{given}={path}", f"out={out}", *QUIET, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(line)
    assert not out.exists()


def test_a_given_metadata_csv_gives_each_image_its_own_row_by_the_layouts_column_names(tmp_path):
    from lesion.data.layouts import LAYOUTS
    from lesion.stack.tabular import read_tabular, select_columns, training_only

    layout = LAYOUTS["isic2024"]
    rng = np.random.default_rng(0)
    ids = [f"ISIC_{k:07d}" for k in range(12)]
    header = [c for c in layout.columns if c not in training_only(layout)]
    table = pd.DataFrame({c: rng.normal(size=len(ids)).round(4) for c in header})
    table = table.assign(isic_id=ids, patient_id=[f"IP_{k % 3}" for k in range(len(ids))],
                         age_approx=rng.integers(20, 80, len(ids)), sex=rng.choice(["male", "female"], len(ids)),
                         anatom_site_general="head/neck", tbp_tile_type="3D: white", tbp_lv_location="Head & Neck",
                         tbp_lv_location_simple="Head & Neck", attribution="a clinic", image_type="TBP tile: close-up",
                         copyright_license="CC-BY")
    csv = tmp_path / "test-metadata.csv"
    table.to_csv(csv, index=False)
    asked = list(rng.permutation(ids))  # any order: each image gets its own row
    frame = read_tabular(layout, tmp_path, "test", asked, select_columns(layout, None), csv)
    expected = table.set_index("isic_id").loc[asked]
    assert np.allclose(frame["tbp_lv_areaMM2"], expected["tbp_lv_areaMM2"])
    assert np.allclose(frame["age"], expected["age_approx"])
    assert frame["sex"].tolist() == expected["sex"].tolist()
    assert frame["tbp_lv_location"].tolist() == ["Head & Neck"] * len(asked)


@pytest.mark.slow
def test_a_two_class_sweep_records_each_checkpoints_validation_pauc80_and_the_summary_shows_it(sweep):
    from lesion.evaluate.summary import summarize
    from lesion.train.module import VAL_PAUC_KEY

    folder, _ = sweep
    for job in ("0", "1"):
        recorded = json.loads((folder / job / "val_metrics.json").read_text())
        stored = torch.load(folder / job / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
        assert recorded["pauc80"] == stored[VAL_PAUC_KEY] and 0 <= recorded["pauc80"] <= 0.2
    frame = summarize(folder)
    assert frame["val_pauc80_mean"].notna().all() and frame["pauc80_mean"].notna().all()
