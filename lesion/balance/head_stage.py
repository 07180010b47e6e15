"""Train the classification head on SMOTE-Tomek-resampled embeddings of the training set.

The backbone is frozen; the training set (as balanced so far, optionally with augmented views)
is embedded once (``lesion.balance.embedding``), resampled in embedding space (``lesion.balance.smote``)
and the head is fitted on the result, validated on the embedded validation split. Since the
heads see images only through their pooled embeddings, the checkpoint (backbone + new head)
predicts on images exactly as the head did on embeddings. With patient metadata, each row is
``[avg; max; encoded metadata]``: SMOTE interpolates the metadata with the embedding, and the
head (with the net's metadata branch) trains on the resampled rows.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from lesion.balance.embedding import cached_embed
from lesion.balance.ranks import on_every_rank, shard, unshard
from lesion.balance.smote import smote_tomek
from lesion.checkpoint import read_checkpoint
from lesion.data.datamodule import IsicDataModule, LesionDataset, evaluation_sampler
from lesion.data.transforms import EvalPreset, TrainPreset
from lesion.errors import LesionError
from lesion.models.net import LesionNet

log = logging.getLogger(__name__)


def load_backbone(net: LesionNet, checkpoint: str | Path) -> None:
    """Copy the backbone weights of a lesion training checkpoint into ``net``.

    The checkpoint is read and checked as every checkpoint is (:func:`lesion.checkpoint.read_checkpoint`).
    """
    prefix = "net.backbone."
    contents, _ = read_checkpoint(checkpoint)
    try:
        state = contents["state_dict"]
        net.backbone.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    except (RuntimeError, KeyError, AttributeError) as error:
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
    plain = LesionDataset(train.images, EvalPreset(size, mean, std), train.indices[is_first], train.metadata)
    augmented_indices = np.concatenate([train.indices[~is_first], *[train.indices] * (views - 1)])
    out = [("train", plain)]
    if len(augmented_indices):
        out.append(("train-augmented", LesionDataset(train.images, TrainPreset(size, mean, std), augmented_indices,
                                                     train.metadata)))
    return out


def _pooled_loader(columns: list[np.ndarray], labels: np.ndarray, batch_size: int, train: bool,
                   sampler: Sampler | None = None) -> DataLoader:
    """Batches ``(avg, mx, [metadata,] y)`` of pooled embeddings (and encoded metadata).

    Args:
        sampler: for evaluation, the rows to load in their order (default: all, in order).
    """
    tensors = [torch.from_numpy(c) for c in columns]  # views of one array (np.split): not copied
    dataset = TensorDataset(*tensors, torch.from_numpy(labels.astype(np.int64)))
    return DataLoader(dataset, batch_size=batch_size, shuffle=train, drop_last=train and len(dataset) > batch_size,
                      sampler=sampler)


class ResampledEmbeddings(pl.LightningDataModule):
    """Data of the head stage: SMOTE-Tomek-resampled training embeddings, embedded validation split.

    Built in :meth:`setup`, which Lightning calls on every rank once the processes exist: under
    DDP each rank embeds its share of the images, the shares are gathered, rank 0 resamples
    once and every rank receives the same resampled set.

    Args:
        net: the network whose (frozen) backbone embeds.
        datamodule: set up and balanced.
        smote: the ``balance.smote_tomek`` config.
        seed: seed of augmentation and resampling.
    """

    def __init__(self, net: LesionNet, datamodule: IsicDataModule, smote: dict, seed: int):
        super().__init__()
        self.net, self.datamodule, self.smote, self.seed = net, datamodule, smote, seed
        self.train: tuple[list[np.ndarray], np.ndarray] | None = None  # (avg, mx[, metadata]), labels
        self.val: list[np.ndarray] | None = None
        self.report: dict = {}

    def _embed(self, dataset: LesionDataset, tag: str) -> tuple[np.ndarray, np.ndarray]:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        data = self.datamodule
        seed = self.seed
        if world > 1:
            # The shard's rows and seed enter the cache key, so each rank caches its own share.
            dataset, tag = shard(dataset, rank, world), f"{tag} (rank {rank}/{world})"
            seed += rank  # each rank's shard gets its own augmentations
        avg, mx = on_every_rank(self.trainer, lambda: cached_embed(
            self.net, dataset, cache_dir=self.smote["cache_dir"], batch_size=data.batch_size,
            num_workers=data.num_workers, seed=seed, tag=tag), gather=True)
        return unshard(avg), unshard(mx)

    @property
    def plan(self):
        """The image DataModule's balance plan: the loss's class weights come from its counts."""
        return self.datamodule.plan

    def setup(self, stage: str) -> None:
        if self.train is not None:
            return
        self.net.to(self.trainer.strategy.root_device)
        rows, labels = [], []
        for tag, dataset in _training_views(self.datamodule, int(self.smote["views"]), self.seed):
            rows.append(self._columns(dataset, tag))
            labels.append(dataset.labels)
        widths = [c.shape[1] for c in rows[0]]
        features, resampled_labels, report = on_every_rank(self.trainer, lambda: smote_tomek(
            np.concatenate([np.concatenate(columns, axis=1) for columns in rows]), np.concatenate(labels),
            k_neighbors=int(self.smote["k_neighbors"]), seed=self.seed, search_dims=self.smote["search_dims"]),
            gather=False)
        log.info("rank %d/%d: the head trains on %d resampled rows (sha256 %s)", self.trainer.global_rank,
                 self.trainer.world_size, len(features), hashlib.sha256(features.tobytes()).hexdigest()[:16])
        self.train = np.split(features, np.cumsum(widths)[:-1], axis=1), resampled_labels
        self.val = self._columns(self.datamodule.val_set, "val")
        classes = self.datamodule.classes
        # Class indices → names, every class listed (0 for classes absent from the training set).
        self.report = {key: {name: int(value.get(k, 0)) for k, name in enumerate(classes)}
                       if key.startswith("counts") else value for key, value in report.items()}

    def _columns(self, dataset: LesionDataset, tag: str) -> list[np.ndarray]:
        """``[avg, mx]`` of ``dataset``, and its encoded metadata when it has some."""
        metadata = dataset.metadata_rows
        return [*self._embed(dataset, tag), *([] if metadata is None else [metadata])]

    def train_dataloader(self) -> DataLoader:
        return _pooled_loader(*self.train, self.datamodule.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return _pooled_loader(self.val, self.datamodule.val_set.labels, self.datamodule.batch_size, train=False,
                              sampler=evaluation_sampler(self.datamodule.val_set, self.trainer))  # one row per image


def fit_head_on_resampled(trainer: pl.Trainer, module: pl.LightningModule, datamodule: IsicDataModule,
                          smote: dict, seed: int) -> dict:
    """Fit ``module``'s head with ``trainer`` on SMOTE-Tomek-resampled embeddings (:class:`ResampledEmbeddings`).

    Args:
        trainer: the trainer of this stage (its checkpoints become the run's).
        module: the classifier; its backbone stays frozen (and unchanged) during the stage.
        datamodule: set up and balanced.
        smote: the ``balance.smote_tomek`` config.
        seed: seed of augmentation and resampling.

    Returns:
        The resampling report (counts before/after, neighbours used, time).
    """
    embeddings = ResampledEmbeddings(module.net, datamodule, smote, seed)
    frozen = [p for p in module.net.backbone.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        trainer.fit(module, datamodule=embeddings)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return embeddings.report
