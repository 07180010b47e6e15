"""Train and eval image presets (albumentations).

Albumentations keeps its own random generators, untouched by ``seed_everything``: every
DataLoader worker must reseed them (see :func:`lesion.data.datamodule.seed_worker_transform`),
or all workers and epochs repeat the same augmentations.

Each preset has a twin for a GPU (:meth:`Preset.handed_over`) that stops before the colour jitter
and the normalisation and hands over uint8 pixels (4× fewer bytes to copy); the device then runs
those two steps batched, with the same parameters
(:class:`lesion.data.device_augmentation.DeviceAugmentation`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import albumentations as A
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2


# Colour jitter of training (torchvision's formulas in both albumentations and kornia), and how often it applies.
JITTER = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.02}
JITTER_P = 0.8


def _compose(transforms: list, mean: Sequence[float], std: Sequence[float], on_device: bool,
             max_pixel_value: float = 255.0) -> A.Compose:
    """``transforms``, then normalisation by ``mean``/``std`` of pixels in [0, ``max_pixel_value``]
    (none ``on_device``: uint8 out), then a CHW tensor."""
    tail = [] if on_device else [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=max_pixel_value)]
    return A.Compose([*transforms, *tail, ToTensorV2()], strict=True)


class Preset:
    """An albumentations pipeline applied to one H×W×3 uint8 RGB image.

    ``on_device`` presets end before the colour jitter and normalisation and give 3×H×W uint8.
    """

    transform: A.Compose
    on_device: bool = False

    def set_random_seed(self, seed: int) -> None:
        """Reseed the augmentation (per DataLoader worker): one generator pair drives every transform.

        Albumentations' own ``Compose.set_random_seed`` gives each transform a generator of the
        same seed, so transforms that draw alike choose alike (both flips fire or neither: 4 of the
        8 orientations). Drawing in turn from one shared stream, they choose independently.
        """
        self.transform.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """H×W×3 uint8 RGB → 3×size×size float tensor (uint8 for an ``on_device`` preset)."""
        return self.transform(image=image)["image"]

    def handed_over(self) -> Preset:
        """This preset's twin for a GPU: the same geometry, uint8 out (module docstring)."""
        raise NotImplementedError


class TrainPreset(Preset):
    """Training augmentation: random resized crop, flips, 90° rotations, colour jitter.

    The jitter computes in float, as the device does: on uint8 pixels albumentations would round
    after each step and shift hue in whole steps of OpenCV's 180-step hue circle, rounded down.

    Args:
        size: output side in pixels (square).
        mean, std: normalisation of the backbone's weights (RGB, in [0, 1] units).
        on_device: stop after the geometry (uint8 out): the device jitters and normalises.
    """

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], on_device: bool = False):
        self.size, self.mean, self.std, self.on_device = size, mean, std, on_device
        geometry = [
            A.RandomResizedCrop(size=(size, size), scale=(0.4, 1.0), ratio=(0.8, 1.25)),
            A.HorizontalFlip(),
            A.VerticalFlip(),
            A.RandomRotate90(),
        ]
        colour = [] if on_device else [A.ToFloat(max_value=255), A.ColorJitter(**JITTER, p=JITTER_P)]
        self.transform = _compose(geometry + colour, mean, std, on_device, max_pixel_value=1.0)

    def handed_over(self) -> TrainPreset:
        return TrainPreset(self.size, self.mean, self.std, on_device=True)


class EvalPreset(Preset):
    """Deterministic evaluation: resize the short side to ``size``, centre-crop a square."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], on_device: bool = False):
        self.size, self.mean, self.std, self.on_device = size, mean, std, on_device
        self.transform = _compose([A.SmallestMaxSize(max_size=size), A.CenterCrop(height=size, width=size)],
                                  mean, std, on_device)

    def handed_over(self) -> EvalPreset:
        return EvalPreset(self.size, self.mean, self.std, on_device=True)


class SquarePreset(Preset):
    """The cached square itself, normalised and not resized (the source of multi-crop evaluation's crops)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], on_device: bool = False):
        self.mean, self.std, self.on_device = mean, std, on_device
        self.transform = _compose([], mean, std, on_device)

    def handed_over(self) -> SquarePreset:
        return SquarePreset(self.mean, self.std, on_device=True)
