"""``run(cfg)``: evaluate a checkpoint on a labelled split or predict a folder of images.

Called by ``evaluate.py`` and tests. The checkpoint alone defines the model, classes and
preprocessing; the dataset defaults to the one the model was trained on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from lesion import plots
from lesion.data.datamodule import IsicDataModule, default_workers
from lesion.data.cache import square_crop, square_size
from lesion.data.images import DECODE_ERRORS, IMAGE_SUFFIXES, TooManyPixels, decode
from lesion.data.layouts import LAYOUTS
from lesion.data.transforms import EvalPreset
from lesion.errors import LesionError
from lesion.files import write_atomic, write_json
from lesion.gradcam import GradCamExplainer, contact_sheet, write_gradcam
from lesion.module import LesionClassifier, load_classifier
from lesion.reports import apply_temperature, evaluation_report, fit_temperature, format_report

log = logging.getLogger(__name__)


class FolderImages(Dataset):
    """Every image file directly in a folder (any size and mode), sorted by name, unlabelled.

    Images are square-cropped at ``size`` as training images are (see :mod:`lesion.data.cache`).
    """

    def __init__(self, folder: Path, transform: EvalPreset, size: int):
        if not folder.is_dir():
            raise LesionError(folder, "folder not found", "pass images=<a folder of .jpg/.png images>")
        self.paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.paths:
            raise LesionError(folder, "holds no .jpg/.png/.tif/.bmp images", "pass the folder that holds the images")
        self.transform, self.size = transform, size

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def ids(self) -> list[str]:
        return [p.stem for p in self.paths]

    def read(self, item: int) -> Image.Image:
        """The image ``item`` as upright 8-bit RGB."""
        path = self.paths[item]
        try:
            return decode(path.read_bytes())
        except TooManyPixels as error:
            raise LesionError(path, str(error), "downscale the image or remove it from the folder") from None
        except DECODE_ERRORS as error:
            raise LesionError(path, f"cannot be decoded as an image ({error})", "remove or replace the file") from None

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int]:
        return self.transform(square_crop(self.read(item), self.size)), -1


def _dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips/90° rotations of a batch (B×3×H×W, square)."""
    rotations = [torch.rot90(x, k, (2, 3)) for k in range(4)]
    return rotations + [torch.flip(r, (3,)) for r in rotations]


@torch.no_grad()
def predict(module: LesionClassifier, loader: DataLoader, tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (N×K) and labels (N, -1 when unlabelled) over ``loader``, in order.

    With ``tta`` the probabilities are averaged over the 8 flips/90° rotations of each image.
    """
    probs, labels = [], []
    for images, targets in tqdm(loader, desc="predict", unit="batch"):
        images = images.to(module.device)
        views = _dihedral(images) if tta else [images]
        probs.append(torch.stack([module(v).float().softmax(1) for v in views]).mean(0).cpu())
        labels.append(targets)
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def _predictions_table(ids: list[str], probs: np.ndarray, classes: list[str], id_column: str,
                       labels: np.ndarray | None) -> pd.DataFrame:
    """ISIC submission format (id + one probability per class) plus true and predicted class."""
    table = pd.DataFrame(probs, columns=classes)
    table.insert(0, id_column, ids)
    if labels is not None:
        table["label"] = [classes[i] for i in labels]
    table["prediction"] = [classes[i] for i in probs.argmax(1)]
    return table


def _explain(module: LesionClassifier, cfg: DictConfig, items: list[tuple[str, object]], probs: np.ndarray,
             out: Path) -> None:
    """Grad-CAM files for the first ``gradcam.n`` items (all when -1) and a contact sheet."""
    n = len(items) if cfg.gradcam.n < 0 else min(cfg.gradcam.n, len(items))
    if n == 0:
        return
    classes = list(module.hparams.classes)
    target = None
    if cfg.gradcam.target is not None:
        if cfg.gradcam.target not in classes:
            raise LesionError("gradcam.target", f"unknown class '{cfg.gradcam.target}'", f"use one of {', '.join(classes)}")
        target = classes.index(cfg.gradcam.target)
    folder = out / "gradcam"
    overlays, titles = [], []
    hp = module.hparams
    layers = ("layer1", "layer2", "layer3", "layer4")
    if cfg.gradcam.layer not in layers:
        raise LesionError("gradcam.layer", f"unknown layer '{cfg.gradcam.layer}'", f"use one of {', '.join(layers)}")
    layer = getattr(module.net.backbone, cfg.gradcam.layer)
    with GradCamExplainer(module.net, hp.mean, hp.std, hp.image_size, target_layer=layer) as explainer:
        for (stem, read), p in tqdm(list(zip(items[:n], probs[:n])), desc="grad-cam", unit="image"):
            image = read()
            cam, used = explainer.explain(image, target)
            overlays.append(write_gradcam(stem, image, cam, folder)["overlay"])
            titles.append(f"{stem} {classes[int(p.argmax())]} {p.max():.2f} · cam {classes[used]}")
    contact_sheet(overlays, out / "gradcam_sheet.png", titles)


def _run_dir_log(ckpt: Path) -> Path | None:
    """The CSV training log of the run a checkpoint comes from, if it is still next to it."""
    run_dir = ckpt.resolve().parent.parent
    for candidate in (run_dir / "logs" / "head" / "metrics.csv", run_dir / "logs" / "metrics.csv"):
        if candidate.is_file():
            return candidate
    return None


def _predict_folder(module: LesionClassifier, cfg: DictConfig, out: Path) -> pd.DataFrame:
    hp = module.hparams
    size = square_size(hp.image_size, (hp.dataset or {}).get("cache_size"))
    images = FolderImages(Path(cfg.images).expanduser(), EvalPreset(hp.image_size, hp.mean, hp.std), size)
    probs, _ = predict(module, DataLoader(images, batch_size=cfg.batch_size, num_workers=default_workers(cfg.num_workers)), cfg.tta)
    id_column = LAYOUTS[hp.dataset["layout"]].id_column if hp.dataset else "image"
    table = _predictions_table(images.ids, probs, list(hp.classes), id_column, None)
    write_atomic(out / "predictions.csv", table.to_csv(index=False))
    items = [(stem, lambda i=i: images.read(i)) for i, stem in enumerate(images.ids)]
    _explain(module, cfg, items, probs, out)
    log.info("%d images predicted → %s", len(table), out / "predictions.csv")
    return table


def run(cfg: DictConfig) -> dict:
    """Evaluate ``cfg.ckpt`` and write the reports to ``cfg.out``.

    On a labelled split (``dataset`` + ``split``): ``metrics.json`` / ``metrics.txt`` (with
    bootstrap CIs and calibration error), ``predictions.csv``, plots, Grad-CAM files. On a folder
    (``images=DIR``): ``predictions.csv`` and Grad-CAM files.

    Returns:
        The metrics (empty for a folder).
    """
    if cfg.split not in ("val", "test"):
        raise LesionError("split", f"unknown split '{cfg.split}'", "use split=val or split=test")
    if cfg.bootstrap < 1:
        raise LesionError("bootstrap", f"needs at least 1 resample, got {cfg.bootstrap}",
                          "use bootstrap=1000 (the default) or more for 95 % intervals")
    module = load_classifier(cfg.ckpt, "cuda" if torch.cuda.is_available() else "cpu", trust=cfg.trust_checkpoint)
    out = Path(cfg.out)
    if cfg.images:
        _predict_folder(module, cfg, out)
        return {}

    hp = module.hparams
    dataset_cfg = OmegaConf.to_container(cfg.dataset, resolve=True) if cfg.get("dataset") else dict(hp.dataset)
    dataset_cfg.update(image_size=hp.image_size, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    datamodule: IsicDataModule = instantiate(dataset_cfg, mean=hp.mean, std=hp.std, _convert_="all")
    classes = list(hp.classes)
    if datamodule.classes != classes:
        raise LesionError("dataset", f"classes {datamodule.classes} differ from the checkpoint's {classes}",
                          "evaluate on the dataset layout the model was trained on")
    datamodule.prepare_data()
    datamodule.setup("test")
    dataset = datamodule.val_set if cfg.split == "val" else datamodule.test_set
    probs, labels = predict(module, datamodule.loader(dataset), cfg.tta)

    if cfg.calibrate:
        val_probs, val_labels = predict(module, datamodule.loader(datamodule.val_set), cfg.tta)
        temperature = fit_temperature(np.log(np.clip(val_probs, 1e-12, None)), val_labels)
        write_json(out / "calibration.json", {"temperature": temperature, "fitted_on": "val", "images": len(val_labels)})
        probs = apply_temperature(np.log(np.clip(probs, 1e-12, None)), temperature)
        log.info("temperature %.3f fitted on %d validation images", temperature, len(val_labels))

    report = evaluation_report(probs, labels, classes, n_bootstrap=cfg.bootstrap, seed=cfg.seed)
    write_json(out / "metrics.json", report)
    write_atomic(out / "metrics.txt", format_report(report))
    table = _predictions_table(dataset.ids, probs, classes, datamodule.layout.id_column, labels)
    write_atomic(out / "predictions.csv", table.to_csv(index=False))

    if cfg.plots:
        figures = out / "plots"
        plots.plot_confusion(report["confusion"], classes, figures / "confusion.png",
                             title=f"{datamodule.layout.name} {cfg.split}")
        plots.plot_roc(probs, labels, classes, figures / "roc.png")
        plots.plot_reliability(probs, labels, figures / "reliability.png", ece=report["ece"])
        plots.plot_class_distribution(labels, classes, figures / "class_distribution.png",
                                      title=f"{datamodule.layout.name} {cfg.split}: images per class")
        training_log = _run_dir_log(Path(cfg.ckpt))
        if training_log is not None:
            plots.plot_training_curves(training_log, figures / "training_curves.png")
        samples = [datamodule.train_set[i] for i in range(min(16, len(datamodule.train_set)))]
        plots.plot_augmented_samples(torch.stack([x for x, _ in samples]), [y for _, y in samples], classes,
                                     hp.mean, hp.std, figures / "augmented_samples.png")

    items = [(image_id, lambda i=image_id: dataset.table.images.read(i)) for image_id in dataset.ids]
    _explain(module, cfg, items, probs, out)
    log.info("%s/%s: bacc %.4f [%.4f, %.4f], auc_macro %.4f → %s", datamodule.layout.name, cfg.split,
             report["bacc"], *report["ci/bacc"], report["auc_macro"], out)
    return report
