"""The input pipeline's last steps, batched on the training device: colour jitter and normalisation.

On a GPU the loader workers run only the geometry of an augmentation (crop, flips, rotations) and
hand over uint8 pixels (:meth:`lesion.data.transforms.Preset.handed_over`); this module finishes
each batch on the device after transfer (:meth:`lesion.data.datamodule.IsicDataModule.on_after_batch_transfer`).

The jitter is kornia's ``ColorJitter``: torchvision's formulas, as albumentations' ``ColorJitter``
uses on the CPU path, with the same ranges and probability (:data:`lesion.data.transforms.JITTER`),
drawn per image. Two differences from the CPU path, neither in the distribution of an image's
factors: kornia draws the order of the four steps once per batch (albumentations per image; each
image still sees every order equally often), and it computes in float where albumentations rounds
uint8 pixels after each step (a difference below 1/255 per step).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lesion.data.transforms import JITTER, JITTER_P


class DeviceAugmentation(nn.Module):
    """uint8 images (B×3×H×W, any device) → float32 normalised images, colour-jittered when ``jitter``.

    Args:
        mean, std: normalisation of the backbone's weights (RGB, in [0, 1] units).
        jitter: apply training's colour jitter (per image, with probability ``JITTER_P``) first.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], jitter: bool):
        super().__init__()
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.jitter = None
        if jitter:
            from kornia.augmentation import ColorJitter  # imported where it is used: 1.5 s at import

            self.jitter = ColorJitter(**JITTER, p=JITTER_P)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255
        if self.jitter is not None:
            x = self.jitter(x)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)
