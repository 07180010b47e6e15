"""Ensembles (evaluate.py ckpt=[…] | a glob | a sweep folder), rank averaging, multi-crop test-time views."""

from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import pytest
import torch
from albumentations.pytorch import ToTensorV2
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from torch.utils.data import DataLoader

from lesion.data.datamodule import IsicDataModule, LesionDataset
from lesion.errors import LesionError
from lesion.evaluate.ensemble import combine, image_rows, member_checkpoints
from lesion.evaluate.predict import crop_corners, predict
from lesion.evaluate.summary import ensemble_commands
from lesion.train.module import LesionClassifier

QUICK = ["experiment=quickstart", "trainer.max_epochs=1", "dataset.synthetic_n=60", "dataset.num_workers=0"]


def test_rank_averaging_shares_ranks_between_ties():
    first = np.array([[0.2, 0.8], [0.2, 0.8], [0.6, 0.4], [0.9, 0.1]])
    second = np.array([[0.1, 0.9], [0.3, 0.7], [0.3, 0.7], [0.8, 0.2]])
    # Ranks of first: column 0 → 1.5, 1.5, 3, 4; column 1 → 3.5, 3.5, 2, 1. Second: 1, 2.5, 2.5, 4 and 4, 2.5, 2.5, 1.
    expected = np.array([[1.5 + 1, 3.5 + 4], [1.5 + 2.5, 3.5 + 2.5], [3 + 2.5, 2 + 2.5], [4 + 4, 1 + 1]]) / 4 / 2
    assert np.allclose(combine([first, second], "rank"), expected)
    assert np.allclose(combine([first, second], "mean"), (first + second) / 2)
    with pytest.raises(LesionError, match="ensemble: 'median' is not one of mean, rank"):
        combine([first], "median")


@settings(max_examples=50, deadline=None)
@given(st.permutations([f"ISIC_{k:07d}" for k in range(6)]), st.integers(0, 5))
def test_member_rows_are_matched_by_image_id_whatever_their_order(ids, changed):
    reference = sorted(ids)
    rows = image_rows(reference, ids)
    assert [ids[row] for row in rows] == reference
    other = [*ids[:changed], "ISIC_9999999", *ids[changed + 1:]]
    assert image_rows(reference, other) is None
    assert image_rows(reference, ids[:-1]) is None and image_rows(reference, [*ids, ids[changed]]) is None


def test_members_from_a_list_a_glob_and_a_sweep_folder_in_job_order(tmp_path):
    for job in (0, 1, 2, 10):
        (tmp_path / "sweep" / str(job) / "checkpoints").mkdir(parents=True)
        (tmp_path / "sweep" / str(job) / "checkpoints" / "best.ckpt").write_bytes(b"")
    jobs = [tmp_path / "sweep" / str(j) / "checkpoints" / "best.ckpt" for j in (0, 1, 2, 10)]
    assert member_checkpoints(str(tmp_path / "sweep")) == jobs
    assert member_checkpoints(str(tmp_path / "sweep" / "1")) == [jobs[1]]
    assert member_checkpoints(str(tmp_path / "sweep" / "1*" / "checkpoints" / "best.ckpt")) == [jobs[1], jobs[3]]
    assert member_checkpoints([str(jobs[2]), str(jobs[0])]) == [jobs[2], jobs[0]]
    with pytest.raises(LesionError, match="is named twice"):
        member_checkpoints([str(jobs[0]), str(tmp_path / "sweep" / "0")])
    with pytest.raises(LesionError, match="matches no file"):
        member_checkpoints(str(tmp_path / "none*.ckpt"))
    with pytest.raises(LesionError, match="holds no <job>/checkpoints/best.ckpt"):
        member_checkpoints(str(tmp_path))


@pytest.fixture(scope="module")
def seeds(run_cli, tmp_path_factory) -> Path:
    """Three quickstart seeds (one epoch each, 60 training images)."""
    sweep = tmp_path_factory.mktemp("seeds") / "sweep"
    run_cli("train.py", "-m", "seed=1,2,3", *QUICK, f"hydra.sweep.dir={sweep}")
    return sweep


def test_ensemble_metrics_are_those_of_the_members_averaged_probabilities(seeds, run_cli, tmp_path):
    singles = []
    for job in range(3):
        out = tmp_path / f"single{job}"
        run_cli("evaluate.py", f"ckpt={seeds / str(job) / 'checkpoints' / 'best.ckpt'}", f"out={out}",
                "gradcam.n=0", "plots=false", "num_workers=0", "bootstrap=10")
        singles.append(pd.read_csv(out / "predictions.csv"))
    out = tmp_path / "ensemble"
    run_cli("evaluate.py", f"ckpt={seeds}", f"out={out}", "member_columns=true", "gradcam.n=1", "num_workers=0",
            "bootstrap=10")
    report = json.loads((out / "metrics.json").read_text())
    classes = report["classes"]
    table = pd.read_csv(out / "predictions.csv")
    assert table["image"].tolist() == singles[0]["image"].tolist()
    mean = np.mean([s[classes].to_numpy() for s in singles], axis=0)
    assert np.abs(table[classes].to_numpy() - mean).max() < 1e-6
    for k, single in enumerate(singles, 1):
        assert np.abs(table[[f"member_{k}/{c}" for c in classes]].to_numpy() - single[classes].to_numpy()).max() < 1e-6
    labels = table["label"].map(classes.index).to_numpy()
    assert report["bacc"] == pytest.approx(balanced_accuracy_score(labels, mean.argmax(1)), abs=1e-9)
    present = [c for c in range(len(classes)) if (labels == c).any()]
    aucs = [roc_auc_score(labels == c, mean[:, c]) for c in present]
    assert report["auc_macro"] == pytest.approx(np.mean(aucs), abs=1e-6)
    assert report["ensemble"] == {"method": "mean", "members": {f"member_{k}": str(seeds / str(k - 1) / "checkpoints"
                                                                                   / "best.ckpt") for k in (1, 2, 3)}}
    assert sorted(p.name for p in (out / "gradcam").iterdir()) == ["member_1", "member_2", "member_3"]
    assert (out / "gradcam_sheet_member_3.png").is_file() and (out / "plots" / "roc.png").is_file()

    ranked = tmp_path / "rank"
    run_cli("evaluate.py", f"ckpt={seeds}/*/checkpoints/best.ckpt", "ensemble=rank", f"out={ranked}", "gradcam.n=0",
            "plots=false", "num_workers=0", "bootstrap=10")
    scores = pd.read_csv(ranked / "predictions.csv")[classes].to_numpy()
    assert np.allclose(scores, combine([s[classes].to_numpy() for s in singles], "rank"), atol=1e-6)

    commands = ensemble_commands(seeds)
    assert commands[-1].splitlines()[0] == "# the top 3 runs by validation BACC as one ensemble"


def test_ensembles_of_other_classes_ranks_with_calibration_and_odd_crops_are_refused(seeds, run_cli, tmp_path):
    isic2017 = tmp_path / "isic2017"
    run_cli("train.py", "dataset=synthetic2017", "dataset.synthetic_n=30", "trainer=cpu", "model.backbone=resnet18",
            "model.weights=none", "dataset.image_size=32", "dataset.num_workers=0", "trainer.max_epochs=1",
            f"hydra.run.dir={isic2017}")
    first = seeds / "0" / "checkpoints" / "best.ckpt"
    refusals = {
        (f"ckpt=[{first},{isic2017 / 'checkpoints' / 'best.ckpt'}]",): "ckpt: " + str(isic2017 / "checkpoints" / "best.ckpt")
        + " has classes ['NV', 'SK', 'MEL']",
        (f"ckpt={seeds}", "ensemble=rank", "calibrate=true"): "calibrate: fits a temperature to probabilities",
        (f"ckpt={first}", "tta.crops=3"): "tta.crops: 3 is not a square number — use 1, 4, 9, 16, … (a k × k grid)",
    }
    for options, message in refusals.items():
        result = run_cli("evaluate.py", *options, f"out={tmp_path / 'refused'}", check=False)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines()[-1].startswith(f"lesion: error: {message}"), result.stderr[-600:]
        assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize("flips", [False, True])
def test_multi_crop_averages_the_crops_at_the_grid_corners(trained_run, flips):
    module = LesionClassifier.load_from_checkpoint(trained_run / "checkpoints" / "best.ckpt")
    hp = module.hparams
    data = IsicDataModule(**{**{k: v for k, v in hp.dataset.items() if k != "seed"}, "num_workers": 0},
                          mean=hp.mean, std=hp.std, seed=hp.dataset["seed"])
    data.setup("test")
    squares = data.test_set.images
    square, size = squares.size, hp.image_size
    corners = crop_corners(square, size, 4)
    assert corners == [(0, 0), (0, square - size), (square - size, 0), (square - size, square - size)]
    assert crop_corners(square, size, 9)[4] == (round((square - size) / 2),) * 2  # the centre crop

    whole = LesionDataset(squares, _Preset([], hp), data.test_set.indices)
    multi, _ = predict(module, DataLoader(whole, batch_size=8), flips=flips, crops=4)
    # Each corner crop classified on its own (albumentations crops the uint8 square, then normalises).
    each = [predict(module, DataLoader(LesionDataset(squares, _Preset([A.Crop(left, top, left + size, top + size)], hp),
                                                     data.test_set.indices), batch_size=8), flips=flips)[0]
            for top, left in corners]
    assert np.abs(multi - np.mean(each, axis=0)).max() < 1e-6
    single, _ = predict(module, data.loader(data.test_set), flips=flips)
    assert np.abs(multi - single).max() > 1e-4  # the crops are other views than the resized square


class _Preset:
    """``transforms`` then normalisation, as a dataset transform."""

    def __init__(self, transforms: list, hp):
        self.transform = A.Compose([*transforms, A.Normalize(mean=tuple(hp.mean), std=tuple(hp.std)), ToTensorV2()])

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return self.transform(image=image)["image"]
