"""Train and eval image presets (albumentations).

Albumentations keeps its own random generators, untouched by ``seed_everything``: every
DataLoader worker must reseed them (see :func:`lesion.data.datamodule.seed_worker_transform`),
or all workers and epochs repeat the same augmentations.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import albumentations as A
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2


class Preset:
    """An albumentations pipeline applied to one H×W×3 uint8 RGB image."""

    transform: A.Compose

    def set_random_seed(self, seed: int) -> None:
        """Reseed the augmentation (per DataLoader worker): one generator pair drives every transform.

        Albumentations' own ``Compose.set_random_seed`` gives each transform a generator of the
        same seed, so transforms that draw alike choose alike (both flips fire or neither: 4 of the
        8 orientations). Drawing in turn from one shared stream, they choose independently.
        """
        self.transform.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """H×W×3 uint8 RGB → 3×size×size float tensor."""
        return self.transform(image=image)["image"]


class TrainPreset(Preset):
    """Training augmentation: random resized crop, flips, 90° rotations, colour jitter.

    Args:
        size: output side in pixels (square).
        mean, std: normalisation of the backbone's weights (RGB, in [0, 1] units).
    """

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]):
        self.transform = A.Compose([
            A.RandomResizedCrop(size=(size, size), scale=(0.4, 1.0), ratio=(0.8, 1.25)),
            A.HorizontalFlip(),
            A.VerticalFlip(),
            A.RandomRotate90(),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.8),
            A.Normalize(mean=tuple(mean), std=tuple(std)),
            ToTensorV2(),
        ], strict=True)


class EvalPreset(Preset):
    """Deterministic evaluation: resize the short side to ``size``, centre-crop a square."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]):
        self.transform = A.Compose([
            A.SmallestMaxSize(max_size=size),
            A.CenterCrop(height=size, width=size),
            A.Normalize(mean=tuple(mean), std=tuple(std)),
            ToTensorV2(),
        ], strict=True)


class SquarePreset(Preset):
    """The cached square itself, normalised and not resized (the source of multi-crop evaluation's crops)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.transform = A.Compose([A.Normalize(mean=tuple(mean), std=tuple(std)), ToTensorV2()], strict=True)
