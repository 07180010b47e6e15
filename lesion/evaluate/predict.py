"""Class probabilities over a loader, optionally averaged over the 8 dihedral views (TTA)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from lesion.train.module import LesionClassifier


def _dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips/90° rotations of a batch (B×3×H×W, square)."""
    rotations = [torch.rot90(x, k, (2, 3)) for k in range(4)]
    return rotations + [torch.flip(r, (3,)) for r in rotations]


@torch.no_grad()
def predict(module: LesionClassifier, loader: DataLoader, tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (N×K) and labels (N, -1 when unlabelled) over ``loader``, in order.

    Batches are ``(images, labels)``, or ``(images, metadata, labels)`` for a net that takes
    patient metadata. With ``tta`` the probabilities are averaged over the 8 flips/90° rotations
    of each image (its metadata unchanged).
    """
    probs, labels = [], []
    for *inputs, targets in tqdm(loader, desc="predict", unit="batch"):
        images = inputs[0].to(module.device)
        metadata = inputs[1].to(module.device) if module.uses_metadata else None
        views = _dihedral(images) if tta else [images]
        probs.append(torch.stack([module(v, metadata).float().softmax(1) for v in views]).mean(0).cpu())
        labels.append(targets)
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()
