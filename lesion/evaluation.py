"""``run(cfg)``: evaluate a checkpoint on a labelled split (called by ``evaluate.py`` and tests)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from lesion.errors import LesionError
from lesion.files import write_atomic, write_json
from lesion.metrics import LesionMetrics
from lesion.module import load_classifier

log = logging.getLogger(__name__)


@torch.no_grad()
def predict(module, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities (N×K) and true labels (N,) over ``loader``, in loader order."""
    probs, labels = [], []
    for images, targets in tqdm(loader, desc="predict", unit="batch"):
        probs.append(module(images.to(module.device)).float().softmax(1).cpu())
        labels.append(targets)
    return torch.cat(probs), torch.cat(labels)


def run(cfg: DictConfig) -> dict:
    """Evaluate ``cfg.ckpt`` on ``cfg.split`` of ``cfg.dataset`` (default: the training dataset).

    Writes ``metrics.json`` (keys of ``test_metrics.json``) and ``predictions.csv`` (id column,
    one probability column per class, true and predicted class) to ``cfg.out``.
    """
    if cfg.split not in ("val", "test"):
        raise LesionError("split", f"unknown split '{cfg.split}'", "use split=val or split=test")
    module = load_classifier(cfg.ckpt, "cuda" if torch.cuda.is_available() else "cpu")
    hparams = module.hparams
    dataset_cfg = OmegaConf.to_container(cfg.dataset, resolve=True) if cfg.get("dataset") else dict(hparams.dataset)
    dataset_cfg.update(image_size=hparams.image_size, batch_size=cfg.batch_size)
    datamodule = instantiate(dataset_cfg, mean=hparams.mean, std=hparams.std, _convert_="all")
    if datamodule.classes != list(hparams.classes):
        raise LesionError("dataset", f"classes {datamodule.classes} differ from the checkpoint's {list(hparams.classes)}",
                          "evaluate on the dataset layout the model was trained on")
    datamodule.prepare_data()
    datamodule.setup("test")
    dataset = datamodule.val_set if cfg.split == "val" else datamodule.test_set
    probs, labels = predict(module, datamodule.test_dataloader() if cfg.split == "test" else datamodule.val_dataloader())

    metrics = LesionMetrics(hparams.classes)
    metrics.update(probs, labels)
    results = metrics.compute()
    out = Path(cfg.out)
    write_json(out / "metrics.json", results)
    classes = list(hparams.classes)
    table = pd.DataFrame(probs.numpy(), columns=classes)
    table.insert(0, datamodule.layout.id_column, dataset.ids)
    table["label"] = [classes[i] for i in labels.tolist()]
    table["prediction"] = [classes[i] for i in probs.argmax(1).tolist()]
    write_atomic(out / "predictions.csv", table.to_csv(index=False))
    log.info("%s/%s: bacc %.4f, auc_macro %.4f → %s", datamodule.layout.name, cfg.split,
             results["bacc"], results["auc_macro"], out)
    return results
