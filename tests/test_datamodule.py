"""DataModule: worker-seeded augmentation, stratified hold-out, loaders."""

from __future__ import annotations

import shutil

import numpy as np
import torch

from lesion.data.datamodule import IsicDataModule
from lesion.data.layouts import LAYOUTS
from lesion.data.splits import stratified_holdout


def make_datamodule(root, num_workers=0, seed=0, **kwargs) -> IsicDataModule:
    dm = IsicDataModule("isic2018", str(root), image_size=32, batch_size=4, num_workers=num_workers, seed=seed, **kwargs)
    dm.setup("fit")
    return dm


def epoch_batches(loader, n_batches=2) -> list[torch.Tensor]:
    out = []
    for i, (x, _) in enumerate(loader):
        out.append(x)
        if i + 1 == n_batches:
            break
    return out


def two_epochs(dm: IsicDataModule) -> list[list[torch.Tensor]]:
    # Same images in the same order every epoch: only the augmentation may differ.
    dm.train_set.indices = dm.train_set.indices[:8]
    loader = dm.loader(dm.train_set, train=False)
    return [epoch_batches(loader, 2) for _ in range(2)]


def test_workers_and_epochs_get_different_augmentations_and_seed_reproduces(synthetic_root):
    torch.manual_seed(0)
    first = two_epochs(make_datamodule(synthetic_root("isic2018"), num_workers=2))
    torch.manual_seed(0)
    again = two_epochs(make_datamodule(synthetic_root("isic2018"), num_workers=2))
    # batch 0 comes from worker 0, batch 1 from worker 1
    for epoch in range(2):
        for batch in range(2):
            assert torch.equal(first[epoch][batch], again[epoch][batch]), "same seed must reproduce"
    assert not torch.equal(first[0][0], first[1][0]), "epoch 2 repeated epoch 1's augmentation"
    assert not torch.equal(first[0][1], first[1][1])
    torch.manual_seed(1)
    other = two_epochs(make_datamodule(synthetic_root("isic2018"), num_workers=2))
    assert not torch.equal(first[0][0], other[0][0]), "a different seed gave the same augmentation"


def test_two_workers_do_not_repeat_each_others_augmentation(synthetic_root):
    dm = make_datamodule(synthetic_root("isic2018"), num_workers=2)
    # The same image in both workers' first batch: its augmentations must differ.
    dm.train_set.indices = np.full(8, dm.train_set.indices[0])
    torch.manual_seed(0)
    batches = epoch_batches(dm.loader(dm.train_set, train=False), 2)
    assert not torch.equal(batches[0], batches[1])


def test_eval_transform_is_deterministic_and_sized(synthetic_root):
    dm = make_datamodule(synthetic_root("isic2018"))
    x1, y1 = dm.val_set[0]
    x2, _ = dm.val_set[0]
    assert x1.shape == (3, 32, 32) and x1.dtype == torch.float32 and torch.equal(x1, x2)
    assert 0 <= y1 < 7


def test_holdout_when_there_is_no_validation_split(synthetic_root, tmp_path):
    root = shutil.copytree(synthetic_root("isic2018"), tmp_path / "copy")
    files = LAYOUTS["isic2018"].splits["val"]
    (root / files.csv[0]).unlink()
    (root / f"{files.images[0]}.zip").unlink()
    dm = make_datamodule(root, val_fraction=0.2)
    train_ids, val_ids = set(dm.train_set.ids), set(dm.val_set.ids)
    assert not train_ids & val_ids
    assert len(train_ids) + len(val_ids) == 60
    assert all(n > 0 for n in dm.class_counts(dm.val_set).values())
    assert make_datamodule(root, val_fraction=0.2).val_set.ids == dm.val_set.ids  # seeded


def test_stratified_holdout_counts():
    labels = np.array([0] * 50 + [1] * 10 + [2] * 2 + [3])
    keep, out = stratified_holdout(labels, 0.2, seed=3)
    assert np.bincount(labels[out], minlength=4).tolist() == [10, 2, 1, 0]
    assert np.bincount(labels[keep], minlength=4).tolist() == [40, 8, 1, 1]
    assert sorted(np.concatenate([keep, out]).tolist()) == list(range(len(labels)))
    keep2, out2 = stratified_holdout(labels, 0.2, seed=4)
    assert not np.array_equal(out, out2)


def test_train_loader_drops_a_last_batch_of_one(synthetic_root):
    dm = make_datamodule(synthetic_root("isic2018"))
    dm.train_set.indices = dm.train_set.indices[:9]
    sizes = [len(y) for _, y in dm.train_dataloader()]
    assert sizes == [4, 4]
