"""Training augmentation: all 8 dihedral orientations, evenly and independently, reproducibly per seed,
whether the device finishes the augmentation (``augment_on=device``) or the CPU does.

Every image is one colour ramp (red rises to the right, green downwards), so the orientation of an
augmented view can be read back from the directions in which its red and green rise, whatever the
crop and colour jitter did.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy.stats import chi2_contingency, chisquare

from lesion.balance.embedding import embed
from lesion.balance.head_stage import _training_views
from lesion.data.datamodule import IsicDataModule
from lesion.data.device_augmentation import DeviceAugmentation
from lesion.data.transforms import TrainPreset

SIDE = 24
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MAJORITY, MINORITY = 1200, 4  # images of class a, b
SIGNIFICANCE = 0.001


def ramp() -> np.ndarray:
    """SIDE×SIDE×3 uint8: red rises along x, green along y, blue constant."""
    y, x = np.mgrid[0:SIDE, 0:SIDE] * 255 // (SIDE - 1)
    return np.stack([x, y, np.full_like(x, 128)], axis=-1).astype(np.uint8)


def orientation(view: torch.Tensor) -> int:
    """Which of the 8 orientations of the ramp a 3×H×W view shows: (red's axis, red's sign, green's sign) as 0–7."""
    red, green = view[0], view[1]
    red_x, red_y = red.diff(dim=1).mean().item(), red.diff(dim=0).mean().item()
    green_x, green_y = green.diff(dim=1).mean().item(), green.diff(dim=0).mean().item()
    red_along_x = abs(red_x) > abs(red_y)
    major, minor = (red_x, red_y) if red_along_x else (red_y, red_x)
    green_major, green_minor = (green_y, green_x) if red_along_x else (green_x, green_y)
    # The readout is only meaningful when each ramp clearly runs along one axis, the two apart.
    assert abs(major) > 3 * abs(minor) and abs(green_major) > 3 * abs(green_minor)
    return 4 * red_along_x + 2 * (major > 0) + (green_major > 0)


def assert_even(orientations: np.ndarray) -> None:
    """All 8 orientations occur, and uniformity is not rejected."""
    counts = np.bincount(orientations, minlength=8)
    assert (counts > 0).all(), f"orientations never drawn: {np.flatnonzero(counts == 0).tolist()} (counts {counts})"
    assert chisquare(counts).pvalue > SIGNIFICANCE, f"uneven orientations: {counts}"


def assert_independent(first: np.ndarray, second: np.ndarray, what: str) -> None:
    """Pairs of orientations are uniform over all 64 combinations: each even, and the two independent."""
    assert len(first) == len(second) >= 640
    counts = np.bincount(8 * first + second, minlength=64)
    assert chisquare(counts).pvalue > SIGNIFICANCE, f"{what}: dependent orientations, pair counts {counts.reshape(8, 8)}"


@pytest.fixture(scope="module")
def ramps(tmp_path_factory) -> Path:
    """``images/``, a ``dataset=folder`` root: the same ramp as MAJORITY images of class a and MINORITY
    of class b; ``cache/``, their image cache."""
    root = tmp_path_factory.mktemp("ramps")
    image = Image.fromarray(ramp())
    for name, n in (("a", MAJORITY), ("b", MINORITY)):
        (root / "images" / name).mkdir(parents=True)
        for i in range(n):
            image.save(root / "images" / name / f"{name}{i:04d}.png")
    return root


def datamodule(root: Path, balance: dict | None = None, augment_on: str = "cpu") -> IsicDataModule:
    dm = IsicDataModule("folder", str(root / "images"), image_size=16, batch_size=64, num_workers=2,
                        val_fraction=0.05, cache_dir=str(root / "cache"), seed=0, balance=balance,
                        augment_on=augment_on)
    dm.setup("fit")
    return dm


def epochs_of(dm: IsicDataModule, epochs: int = 2) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per epoch of the real training loader, per batch: the orientation and the label of every item
    (batches of uint8 pixels finished as the device finishes them)."""
    torch.manual_seed(0)
    loader, finish = dm.train_dataloader(), DeviceAugmentation(MEAN, STD, jitter=True)
    assert dm.augments_on_device == (dm.augment_on == "device")
    return [[(np.array([orientation(view) for view in (finish(x) if x.dtype == torch.uint8 else x)]), y.numpy())
             for x, y in loader] for _ in range(epochs)]


@pytest.mark.parametrize("augment_on", ["cpu", "device"])
def test_training_loader_draws_every_orientation_evenly_and_independently(ramps, augment_on):
    epochs = epochs_of(datamodule(ramps, augment_on=augment_on))
    drawn = np.concatenate([o for epoch in epochs for o, _ in epoch])
    assert len(drawn) >= 2000
    assert_even(drawn)
    full = [[o for o, _ in epoch if len(o) == 64] for epoch in epochs]
    # Neighbouring items of a batch; the same slot of the two workers' batches (the loader
    # alternates workers); the same slot of the two epochs.
    batches = full[0] + full[1]
    assert_independent(np.concatenate([o[0::2] for o in batches]), np.concatenate([o[1::2] for o in batches]), "items")
    worker_pairs = [(epoch[k], epoch[k + 1]) for epoch in full for k in range(0, len(epoch) - 1, 2)]
    assert_independent(*(np.concatenate(side) for side in zip(*worker_pairs)), "workers")
    assert_independent(np.concatenate(full[0]), np.concatenate(full[1]), "epochs")


@pytest.mark.parametrize("augment_on", ["cpu", "device"])
def test_targeted_augmentation_copies_draw_every_orientation_evenly(ramps, augment_on):
    dm = datamodule(ramps, balance={"augment": {"target": 1.0}}, augment_on=augment_on)
    minority = dm.classes.index("b")
    epochs = epochs_of(dm)
    # All but the few originals of class b are its augmented copies.
    copies = [o[y == minority] for epoch in epochs for o, y in epoch]
    assert sum(map(len, copies)) >= 2000
    assert_even(np.concatenate(copies))
    pairs = [c[: len(c) // 2 * 2] for c in copies]
    assert_independent(np.concatenate([c[0::2] for c in pairs]), np.concatenate([c[1::2] for c in pairs]), "copies")


class OrientationEmbedder(torch.nn.Module):
    """Stands in for ``LesionNet`` in :func:`embed`: a view's "embedding" is its orientation, one-hot."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # embed() reads the device from a parameter

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        onehot = torch.nn.functional.one_hot(torch.tensor([orientation(view) for view in images]), 8).float()
        return onehot, onehot


def test_smote_tomek_views_draw_every_orientation_evenly_and_reproducibly(ramps):
    views = 3
    dm = datamodule(ramps)
    (_, _), (tag, augmented) = _training_views(dm, views, seed=0)
    assert tag == "train-augmented" and len(augmented) == (views - 1) * len(dm.train_set) >= 2000
    drawn = embed(OrientationEmbedder(), augmented, batch_size=64, num_workers=2, seed=0)[0].argmax(1)
    assert_even(drawn)
    assert_independent(drawn[0:-1:2], drawn[1::2], "items")
    n = len(dm.train_set)
    assert_independent(drawn[:n], drawn[n:], "views of one image")
    again = embed(OrientationEmbedder(), augmented, batch_size=16, num_workers=0, seed=0)[0].argmax(1)
    np.testing.assert_array_equal(again, drawn)  # the seed alone decides, not batches or workers


def applied(preset: TrainPreset, draws: int) -> dict[str, np.ndarray]:
    """Per random choice of the training pipeline, what it chose in each of ``draws`` draws of the ramp."""
    preset.transform.save_applied_params = True
    choices = {"large crop": [], "horizontal flip": [], "vertical flip": [], "rotation": [], "colour jitter": []}
    for _ in range(draws):
        steps = dict(preset.transform(image=ramp())["applied_transforms"])
        left, top, right, bottom = steps["RandomResizedCrop"]["crop_coords"]
        choices["large crop"].append((right - left) * (bottom - top) > 0.7 * SIDE**2)
        choices["horizontal flip"].append("HorizontalFlip" in steps)
        choices["vertical flip"].append("VerticalFlip" in steps)
        choices["rotation"].append(steps["RandomRotate90"]["factor"])
        choices["colour jitter"].append("ColorJitter" in steps)
    return {name: np.asarray(chosen, dtype=int) for name, chosen in choices.items()}


def test_every_random_transform_chooses_independently_of_the_others():
    preset = TrainPreset(16, MEAN, STD)
    preset.set_random_seed(0)
    choices = applied(preset, 4000)
    for (a, first), (b, second) in combinations(choices.items(), 2):
        table = np.zeros((first.max() + 1, second.max() + 1))
        np.add.at(table, (first, second), 1)
        assert table.shape[0] > 1 and table.shape[1] > 1, f"{a} or {b} always chooses the same"
        assert chi2_contingency(table).pvalue > SIGNIFICANCE, f"{a} depends on {b}: {table.tolist()}"


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_a_seed_reproduces_its_augmentations_and_another_seed_does_not(seed):
    def draws(seed: int) -> torch.Tensor:
        preset = TrainPreset(16, MEAN, STD)
        preset.set_random_seed(seed)
        return torch.stack([preset(ramp()) for _ in range(4)])

    first = draws(seed)
    assert torch.equal(first, draws(seed))
    assert not torch.equal(first, draws((seed + 1) % 2**32))
