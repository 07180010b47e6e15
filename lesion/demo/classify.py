"""What the page shows for each uploaded image, computed as ``evaluate.py images=…`` computes it.

Each upload is decoded and preprocessed by :class:`lesion.data.unlabelled.FolderImages` with the
checkpoint's settings, classified by :func:`lesion.evaluate.predict.predict_with_energy` (its
energy flagged ``unknown`` above the checkpoint's out-of-distribution threshold, when it stores
one), and explained by :class:`lesion.evaluate.gradcam.GradCamExplainer` on the very tensor that
was classified.
A file that cannot be read gets its message instead; it never stops the others.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from lesion.data.cache import square_size
from lesion.data.custom import CUSTOM_LAYOUTS
from lesion.data.transforms import EvalPreset
from lesion.data.unlabelled import FolderImages
from lesion.device import resolve_device
from lesion.errors import LesionError
from lesion.evaluate.gradcam import GradCamExplainer, overlay
from lesion.evaluate.ood import unknown
from lesion.evaluate.predict import predict_with_energy
from lesion.train.module import LesionClassifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    """One upload: its name and either its probabilities (K, class order), Grad-CAM overlay
    (H×W×3 uint8 at the image's size, for the class ``explained``) and whether it is ``unknown``
    (unlike the training data; ``None`` without a threshold), or the ``error`` to show."""

    name: str
    probabilities: np.ndarray | None = None
    overlay: np.ndarray | None = None
    explained: str | None = None
    unknown: bool | None = None
    error: str | None = None


def trained_on(dataset: Mapping | None) -> str:
    """What a model was trained on, from its checkpoint's ``dataset`` hyper-parameters: the layout
    (synthetic, or a custom layout's folder), then each external source (``dataset.extra``)."""
    if not dataset:
        return "training data not recorded in the checkpoint"
    primary = dataset["layout"]
    if dataset.get("synthetic"):
        primary += " (synthetic)"
    elif primary in CUSTOM_LAYOUTS:  # "folder" alone says nothing of which images
        primary += f" at {dataset['root']}"
    return "trained on " + " + ".join([primary, *(source["layout"] for source in dataset.get("extra") or [])])


class PageModel:
    """A checkpoint's model as the page uses it.

    Args:
        module: the loaded checkpoint; a model trained with patient metadata is refused (the page
            takes images only).
        name: how the page names the model (e.g. the checkpoint path).
        layer: the backbone stage Grad-CAM explains.
    """

    def __init__(self, module: LesionClassifier, name: str, layer: str = "layer4"):
        if module.uses_metadata:
            raise LesionError("ckpt", f"{name} was trained with patient metadata, and the page takes images only",
                              "predict with evaluate.py images=DIR metadata=CSV")
        self.module, self.name, self.layer = module, name, layer
        hp = module.hparams
        self.classes = list(hp.classes)
        self.description = (f"{hp.model['name']} head on {hp.model['backbone']}, {hp.image_size} px input; "
                            f"{trained_on(hp.dataset)}; classes {', '.join(self.classes)}")
        self._transform = EvalPreset(hp.image_size, hp.mean, hp.std)
        self._size = square_size(hp.image_size, (hp.dataset or {}).get("cache_size"))
        self._color_constancy = (hp.dataset or {}).get("color_constancy")

    def classify(self, paths: Sequence[Path], names: Sequence[str] | None = None) -> list[Result]:
        """A :class:`Result` per file, in order; ``names`` are what the page calls them (default the file names)."""
        names = list(names or [Path(p).name for p in paths])
        images = FolderImages(paths, self._transform, self._size, self._color_constancy)
        items, errors = {}, {}
        for i, name in enumerate(names):
            try:
                items[i] = images[i]
            except LesionError as error:  # its `where` is the upload's temporary path: the page names the file
                errors[i] = f"{error.problem} — {error.fix}" if error.problem else str(error)
        results = {i: Result(names[i], error=message) for i, message in errors.items()}
        if items:
            order = sorted(items)
            probs, energies, _ = predict_with_energy(self.module, DataLoader([items[i] for i in order], batch_size=16))
            threshold = self.module.ood_threshold
            flags = [None] * len(order) if threshold is None else unknown(energies, threshold.threshold).tolist()
            layer = getattr(self.module.net.backbone, self.layer)
            with GradCamExplainer(self.module.net, target_layer=layer) as explainer:
                for i, p, flag in zip(order, probs, flags):
                    original = images.read(i)
                    explained = explainer.explain(items[i][0], original.size)
                    results[i] = Result(names[i], p, overlay(np.asarray(original), explained.cam),
                                        self.classes[explained.target], flag)
        return [results[i] for i in range(len(names))]


def load_page_model(ckpt: str | Path, layer: str, trust: bool = False, device: str = "auto") -> PageModel:
    """The :class:`PageModel` of a checkpoint, on ``device`` (:func:`lesion.device.resolve_device`)."""
    module = LesionClassifier.load_from_checkpoint(ckpt, resolve_device("device", device), weights_only=not trust)
    return PageModel(module, str(ckpt), layer)
