"""Calibrating an ensemble: members must share their validation images; rows match by image id."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesion.evaluate.calibration import apply_temperature, fit_temperature

pytestmark = pytest.mark.slow

TINY = ["dataset=isic2018", "trainer=cpu", "model.backbone=resnet18", "model.weights=none", "dataset.image_size=32",
        "dataset.batch_size=8", "dataset.num_workers=0", "trainer.max_epochs=1"]
QUIET = ["gradcam.n=0", "plots=false", "num_workers=0", "bootstrap=10"]
GROUND_TRUTH = {"val": "ISIC2018_Task3_Validation_GroundTruth.csv", "test": "ISIC2018_Task3_Test_GroundTruth.csv"}


@pytest.fixture(scope="module")
def members(run_cli, synthetic_root, tmp_path_factory) -> dict[str, Path]:
    """Checkpoints: ``a`` and ``b`` validated on the same official images, listed in opposite orders
    (``b``'s copy of the data lists its validation and test images backwards); ``fold1`` and ``fold2``
    validated on the two halves of ``a``'s training images (``dataset.fold=k/2``)."""
    base = tmp_path_factory.mktemp("calibration")
    reversed_root = base / "reversed"
    shutil.copytree(synthetic_root("isic2018"), reversed_root)
    for name in GROUND_TRUTH.values():
        table = pd.read_csv(reversed_root / name, dtype=str)
        table.iloc[::-1].to_csv(reversed_root / name, index=False)
    roots = {"a": synthetic_root("isic2018"), "b": reversed_root}
    for seed, (name, root) in enumerate(roots.items(), 1):
        run_cli("train.py", *TINY, f"dataset.root={root}", f"seed={seed}", f"hydra.run.dir={base / name}")
    run_cli("train.py", "-m", *TINY, f"dataset.root={roots['a']}", "dataset.fold=1/2,2/2",
            f"hydra.sweep.dir={base / 'folds'}")
    found = {name: base / name / "checkpoints" / "best.ckpt" for name in roots}
    found.update({f"fold{k}": base / "folds" / str(k - 1) / "checkpoints" / "best.ckpt" for k in (1, 2)})
    return found


def _probabilities(run_cli, ckpt: Path, split: str, out: Path) -> pd.DataFrame:
    """One model's ``predictions.csv`` on ``split``, indexed by image id."""
    run_cli("evaluate.py", f"ckpt={ckpt}", f"split={split}", f"out={out}", *QUIET)
    return pd.read_csv(out / "predictions.csv").set_index("image")


def test_members_validated_on_other_images_are_refused_before_writing(members, run_cli, tmp_path):
    out = tmp_path / "out"
    result = run_cli("evaluate.py", f"ckpt=[{members['fold1']},{members['fold2']}]", "calibrate=true", "split=test",
                     f"out={out}", *QUIET, check=False)
    assert result.returncode == 2, result.stderr[-600:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"lesion: error: calibrate: member_2 ({members['fold2']}) validated on other images than "
                           f"member_1 ({members['fold1']}): 30 and 30 images, 0 shared — "), line
    assert "Traceback" not in result.stderr and not out.exists()


def test_members_of_one_validation_split_calibrate_on_their_images_matched_by_id(members, run_cli, tmp_path):
    out = tmp_path / "ensemble"
    run_cli("evaluate.py", f"ckpt=[{members['a']},{members['b']}]", "calibrate=true", "split=test",
            "member_columns=true", f"out={out}", *QUIET)
    report = json.loads((out / "metrics.json").read_text())
    classes = report["classes"]
    val = [_probabilities(run_cli, members[name], "val", tmp_path / f"{name}_val") for name in ("a", "b")]
    test = [_probabilities(run_cli, members[name], "test", tmp_path / f"{name}_test") for name in ("a", "b")]
    assert list(val[0].index) == list(val[1].index)[::-1] and list(test[0].index) == list(test[1].index)[::-1]

    # The temperature is fitted on the mean of the members' probabilities of each validation image, against its label.
    images = val[0].index
    mean_val = np.mean([v.loc[images, classes].to_numpy() for v in val], axis=0)
    labels = val[0].loc[images, "label"].map(classes.index).to_numpy()
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["images"] == len(images)
    assert calibration["temperature"] == pytest.approx(fit_temperature(np.log(mean_val), labels), rel=1e-4)

    # The test rows follow the first member's order; each member's columns are its own probabilities of that image.
    table = pd.read_csv(out / "predictions.csv").set_index("image")
    assert list(table.index) == list(test[0].index)
    for k, single in enumerate(test, 1):
        assert np.abs(table[[f"member_{k}/{c}" for c in classes]].to_numpy()
                      - single.loc[table.index, classes].to_numpy()).max() < 1e-6
        assert (table["label"] == single.loc[table.index, "label"]).all()
    mean_test = np.mean([t.loc[table.index, classes].to_numpy() for t in test], axis=0)
    expected = apply_temperature(np.log(mean_test), calibration["temperature"])
    assert np.abs(table[classes].to_numpy() - expected).max() < 1e-5
