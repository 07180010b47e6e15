"""Train the classification head on SMOTE-Tomek-resampled embeddings of the training set.

The backbone is frozen; the training set (as balanced so far, optionally with augmented views)
is embedded once (``lesion.embedding``), resampled in embedding space (``lesion.data.smote``)
and the head is fitted on the result, validated on the embedded validation split. Since the
heads see images only through their pooled embeddings, the checkpoint (backbone + new head)
predicts on images exactly as the head did on embeddings.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lesion.data.datamodule import IsicDataModule, LesionDataset
from lesion.data.smote import smote_tomek
from lesion.data.transforms import EvalPreset, TrainPreset
from lesion.embedding import cached_embed
from lesion.errors import LesionError
from lesion.models.net import LesionNet
from lesion.module import LesionClassifier

log = logging.getLogger(__name__)


def load_backbone(net: LesionNet, checkpoint: str | Path) -> None:
    """Copy the backbone weights of a training checkpoint into ``net``."""
    prefix = "net.backbone."
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        net.backbone.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    except (OSError, RuntimeError, KeyError) as error:
        raise LesionError(checkpoint, f"cannot provide backbone weights ({type(error).__name__}: {error})",
                          "pass balance.backbone_ckpt=<run>/checkpoints/best.ckpt of a run "
                          "with the same model.backbone") from None
    log.info("backbone weights from %s", checkpoint)


def _training_views(datamodule: IsicDataModule, views: int, seed: int) -> list[tuple[str, LesionDataset]]:
    """The balanced training entries as datasets to embed.

    First occurrences of an image are embedded un-augmented; repeats planned by targeted
    augmentation and the ``views - 1`` extra views of every entry get random augmentations.
    """
    train = datamodule.train_set
    _, first = np.unique(train.indices, return_index=True)
    is_first = np.zeros(len(train.indices), dtype=bool)
    is_first[first] = True
    size, mean, std = datamodule.image_size, datamodule.mean, datamodule.std
    plain = LesionDataset(train.images, EvalPreset(size, mean, std), train.indices[is_first])
    augmented_indices = np.concatenate([train.indices[~is_first], *[train.indices] * (views - 1)])
    out = [("train", plain)]
    if len(augmented_indices):
        preset = TrainPreset(size, mean, std)
        preset.set_random_seed(seed)
        out.append(("train-augmented", LesionDataset(train.images, preset, augmented_indices)))
    return out


def _pooled_loader(avg: np.ndarray, mx: np.ndarray, labels: np.ndarray, batch_size: int, train: bool) -> DataLoader:
    dataset = TensorDataset(torch.from_numpy(avg), torch.from_numpy(mx), torch.from_numpy(labels.astype(np.int64)))
    return DataLoader(dataset, batch_size=batch_size, shuffle=train, drop_last=train and len(dataset) > batch_size)


def fit_head_on_resampled(trainer: pl.Trainer, module: LesionClassifier, datamodule: IsicDataModule,
                          smote: dict, seed: int) -> dict:
    """Embed, resample with SMOTE-Tomek and fit ``module``'s head with ``trainer``.

    Args:
        trainer: the trainer of this stage (its checkpoints become the run's).
        module: the classifier; its backbone stays frozen (and unchanged) during the stage.
        datamodule: set up and balanced.
        smote: the ``balance.smote_tomek`` config.
        seed: seed of augmentation and resampling.

    Returns:
        The resampling report (counts before/after, neighbours used, time).
    """
    net = module.net
    if torch.cuda.is_available():
        net.cuda()
    transform = {"size": datamodule.image_size, "cache_size": datamodule.cache_size, "mean": list(datamodule.mean), "std": list(datamodule.std)}
    embed_args = dict(cache_dir=smote["cache_dir"], batch_size=datamodule.batch_size,
                      num_workers=datamodule.num_workers, seed=seed)
    avgs, maxes, labels = [], [], []
    for tag, dataset in _training_views(datamodule, int(smote["views"]), seed):
        avg, mx = cached_embed(net, dataset, tag=tag, transform_key={**transform, "augmented": tag != "train"},
                               **embed_args)
        avgs.append(avg)
        maxes.append(mx)
        labels.append(dataset.labels)
    channels = avgs[0].shape[1]
    features, resampled_labels, report = smote_tomek(
        np.concatenate([np.concatenate(avgs), np.concatenate(maxes)], axis=1), np.concatenate(labels),
        k_neighbors=int(smote["k_neighbors"]), seed=seed, search_dims=smote["search_dims"])
    val_avg, val_mx = cached_embed(net, datamodule.val_set, tag="val", transform_key={**transform, "augmented": False},
                                   **embed_args)

    frozen = [p for p in net.backbone.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        trainer.fit(
            module,
            train_dataloaders=_pooled_loader(features[:, :channels], features[:, channels:], resampled_labels,
                                             datamodule.batch_size, train=True),
            val_dataloaders=_pooled_loader(val_avg, val_mx, datamodule.val_set.labels, datamodule.batch_size,
                                           train=False),
        )
    finally:
        for p in frozen:
            p.requires_grad_(True)
    classes = datamodule.classes
    # Class indices → names, every class listed (0 for classes absent from the training set).
    return {key: {name: int(value.get(k, 0)) for k, name in enumerate(classes)} if key.startswith("counts") else value
            for key, value in report.items()}
