"""Class probabilities over a loader, averaged over test-time views: the 8 dihedral flips, ordered crops, or both.

Views (``flips``, ``crops``):

- ``crops=1`` classifies the item as it is: the cached square resized to the input size
  (``EvalPreset``);
- ``crops=N`` (N = k², e.g. 4, 9, 16) classifies N crops of the input size from the cached square
  itself (``SquarePreset`` items, not resized), their top-left corners on a k×k grid from the
  top-left to the bottom-right corner, row by row (the ordered multi-crop of Gessert et al.,
  MethodsX 2020);
- ``flips`` replaces every view by its 8 flips / 90° rotations.

The probabilities of all views are averaged, and so are their energies
(:func:`lesion.evaluate.ood.energy_score`, the out-of-distribution score), each view's computed
from the very logits that give its probabilities.

Batches are transferred once; views, normalisation (of batches handed over as uint8 pixels,
:meth:`lesion.data.transforms.Preset.handed_over`) and the forward passes run on the module's
device, optionally under autocast and channels-last (:data:`PRECISIONS`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from lesion.data.device_augmentation import DeviceAugmentation
from lesion.data.transforms import SquarePreset
from lesion.evaluate.ood import energy_score
from lesion.train.module import LesionClassifier

# Images (B×3×H×W) and encoded metadata (B×D or None) → B×K class probabilities.
Probabilities = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]
# The precision option of prediction: the autocast dtype (None: float32 throughout).
PRECISIONS = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Views of a batch share a forward pass on a GPU up to this many images (on the CPU, one view per pass).
GPU_FORWARD_IMAGES = 512


def _dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips/90° rotations of a batch (B×3×H×W, square)."""
    rotations = [torch.rot90(x, k, (2, 3)) for k in range(4)]
    return rotations + [torch.flip(r, (3,)) for r in rotations]


def crop_corners(square: int, size: int, crops: int) -> list[tuple[int, int]]:
    """``(top, left)`` of each of ``crops`` = k² crops of side ``size`` from a ``square``-pixel square, row by row."""
    k = math.isqrt(crops)
    if k * k != crops or crops < 1:
        raise ValueError(f"crops={crops} is not a square number")
    steps = np.linspace(0, square - size, k).round().astype(int).tolist() if k > 1 else [(square - size) // 2]
    return [(top, left) for top in steps for left in steps]


def views(images: torch.Tensor, size: int, flips: bool = False, crops: int = 1) -> list[torch.Tensor]:
    """The test-time views of a batch (module docstring): with ``crops > 1``, ``images`` are whole squares."""
    if crops > 1:
        bases = [images[..., top:top + size, left:left + size] for top, left in crop_corners(images.shape[-1], size, crops)]
    else:
        bases = [images]
    return [view for base in bases for view in (_dihedral(base) if flips else [base])]


def prediction_items(dataset: Dataset, module: LesionClassifier, crops: int) -> Dataset:
    """A copy of ``dataset`` (items preprocessed by its ``transform`` preset) as :func:`predict` takes it
    for ``crops``: whole squares for multi-crop, handing over uint8 pixels (normalised on the device)."""
    viewed = copy.copy(dataset)
    preset = SquarePreset(module.hparams.mean, module.hparams.std) if crops > 1 else dataset.transform
    viewed.transform = preset.handed_over()
    return viewed


def predict(module: LesionClassifier, loader: DataLoader, flips: bool = False, crops: int = 1,
            graph: Probabilities | None = None, precision: str = "32", channels_last: bool = False,
            images_per_forward: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (N×K) and labels (N) over ``loader``: :func:`predict_with_energy` without the energies."""
    probs, _, labels = predict_with_energy(module, loader, flips, crops, graph, precision, channels_last,
                                           images_per_forward)
    return probs, labels


@torch.no_grad()
def predict_with_energy(module: LesionClassifier, loader: DataLoader, flips: bool = False, crops: int = 1,
                        graph: Probabilities | None = None, precision: str = "32", channels_last: bool = False,
                        images_per_forward: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class probabilities (N×K), energies (N) and labels (N, -1 when unlabelled) over ``loader``, in order.

    Batches are ``(images, labels)``, or ``(images, metadata, labels)`` for a net that takes
    patient metadata (the same metadata for every view); images normalised, or uint8 pixels that
    are normalised here with the module's ``mean``/``std``. The probabilities are averaged over
    :func:`views`; with ``crops > 1`` the loader gives whole squares (``SquarePreset``).
    By default the module's net gives each view's logits, whose softmax is its probabilities (as
    the :class:`~lesion.export.graph.ProbabilityGraph` an export holds computes them) and whose
    energy is its out-of-distribution score. An exported graph run elsewhere
    (:class:`~lesion.export.onnx.OnnxRuntimeGraph`) may take the net's place as ``graph``: it gives
    probabilities only, so the energies are NaN.

    Args:
        precision: a key of :data:`PRECISIONS`: ``32``, or autocast to ``bf16`` / ``fp16``.
        channels_last: pass the images channels-last (the module's net should be converted too).
        images_per_forward: views of a batch share a forward pass up to this many images
            (default :data:`GPU_FORWARD_IMAGES` on a GPU; on the CPU one view per pass).
    """
    probs, energies, labels = [], [], []
    device, size = module.device, module.hparams.image_size
    module.net.eval()
    normalise = DeviceAugmentation(module.hparams.mean, module.hparams.std, jitter=False)
    dtype = PRECISIONS[precision]
    for *inputs, targets in tqdm(loader, desc="predict", unit="batch"):
        images = inputs[0].to(device, non_blocking=True)
        if images.dtype == torch.uint8:
            images = normalise(images)
        metadata = inputs[1].to(device) if module.uses_metadata else None
        seen = views(images, size, flips, crops)
        limit = images_per_forward or (GPU_FORWARD_IMAGES if device.type == "cuda" else len(images))
        per_forward = max(1, limit // len(images))
        view_probs, view_energies = [], []
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            for start in range(0, len(seen), per_forward):
                chunk = torch.cat(seen[start:start + per_forward])
                if channels_last:
                    chunk = chunk.contiguous(memory_format=torch.channels_last)
                repeated = None if metadata is None else metadata.repeat(len(seen[start:start + per_forward]), 1)
                if graph is None:
                    logits = module.net(chunk, repeated).float()
                    view_probs += logits.softmax(1).split(len(images))
                    view_energies += torch.from_numpy(energy_score(logits.cpu().numpy())).split(len(images))
                else:
                    view_probs += graph(chunk, repeated).float().split(len(images))
                    view_energies += torch.full((len(chunk),), float("nan"), dtype=torch.float64).split(len(images))
        probs.append(torch.stack(view_probs).mean(0).cpu())
        energies.append(torch.stack(view_energies).mean(0))
        labels.append(targets)
    return torch.cat(probs).numpy(), torch.cat(energies).numpy(), torch.cat(labels).numpy()
