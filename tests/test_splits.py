"""Leakage-free splits: lesion-grouped hold-out and k-fold cross-validation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesion.data.datamodule import IsicDataModule
from lesion.data.readers import read_split
from lesion.data.layouts import LAYOUTS
from lesion.errors import LesionError

GROUPINGS = "ISIC2018_Task3_Training_LesionGroupings.csv"


@pytest.fixture
def grouped_root(synthetic_root, tmp_path) -> Path:
    """Synthetic ISIC 2018 without a validation split, with a groupings file: 2–3 images per lesion."""
    root = shutil.copytree(synthetic_root("isic2018"), tmp_path / "copy")
    files = LAYOUTS["isic2018"].splits["val"]
    (root / files.csv[0]).unlink()
    (root / f"{files.images[0]}.zip").unlink()
    table = read_split("isic2018", root, "train")
    rows = []
    for cls in np.unique(table.labels):
        ids = [i for i, label in zip(table.ids, table.labels) if label == cls]
        for n, image_id in enumerate(ids):
            rows.append({"image": image_id, "lesion_id": f"HAM_{cls}_{n // 3}", "diagnosis_confirm_type": "histo"})
    pd.DataFrame(rows).to_csv(root / GROUPINGS, index=False)
    return root


def datamodule(root: Path, **kwargs) -> IsicDataModule:
    dm = IsicDataModule("isic2018", str(root), image_size=32, batch_size=4, num_workers=0, seed=0, **kwargs)
    dm.setup("fit")
    return dm


def lesions(root: Path, ids: list[str]) -> set[str]:
    lesion_of = pd.read_csv(root / GROUPINGS).set_index("image")["lesion_id"]
    return set(lesion_of[ids])


def test_holdout_keeps_every_lesion_on_one_side(grouped_root):
    dm = datamodule(grouped_root, val_fraction=0.2)
    train_ids, val_ids = dm.train_set.ids, dm.val_set.ids
    assert len(train_ids) + len(val_ids) == 60 and not set(train_ids) & set(val_ids)
    assert not lesions(grouped_root, train_ids) & lesions(grouped_root, val_ids)
    # a fifth of the 60 images, to within one lesion of 3
    assert 9 <= len(val_ids) <= 15


def test_folds_partition_the_training_split_by_lesion(grouped_root):
    seen = []
    for k in range(1, 6):
        dm = datamodule(grouped_root, fold=f"{k}/5")
        assert not lesions(grouped_root, dm.train_set.ids) & lesions(grouped_root, dm.val_set.ids)
        seen.extend(dm.val_set.ids)
    assert sorted(seen) == sorted(read_split("isic2018", grouped_root, "train").ids)  # each image validated once


def test_split_by_image_ignores_the_groupings(grouped_root):
    by_image = datamodule(grouped_root, val_fraction=0.2, split_by="image")
    counts = np.bincount(read_split("isic2018", grouped_root, "train").labels)
    # the per-class stratified hold-out: round(0.2 · n_c), at least one, per class
    assert len(by_image.val_set) == sum(max(1, round(0.2 * n)) for n in counts)


def test_split_by_lesion_needs_a_groupings_file(synthetic_root, tmp_path):
    root = shutil.copytree(synthetic_root("isic2018"), tmp_path / "plain")
    with pytest.raises(LesionError, match="dataset.split_by"):
        datamodule(root, split_by="lesion", fold="1/5")


@pytest.mark.parametrize("fold", ["0/5", "3/2", "1/1", "one/five"])
def test_bad_fold_is_a_clear_error(synthetic_root, fold):
    with pytest.raises(LesionError, match="dataset.fold"):
        datamodule(synthetic_root("isic2018"), fold=fold)
