"""LightningDataModule over an official ISIC layout (real or synthetic): reads, caches, splits, balances."""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Sequence, Sized
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler, WeightedRandomSampler, get_worker_info

from lesion.balance.plan import BalancePlan, plan_balance
from lesion.data.cache import SquareImages, available_cores, default_cache_dir, square_size
from lesion.data.images import DEFAULT_MAX_PIXELS
from lesion.data.external import add_external
from lesion.data.readers import SplitTable, find_grouping, read_group_map, read_groups, read_split
from lesion.data.custom import layout_of
from lesion.data.device_augmentation import DeviceAugmentation
from lesion.data.layouts import counts_of
from lesion.data.metadata import read_metadata
from lesion.data.metadata_features import MetadataEncoding
from lesion.data.splits import parse_fold, split_indices
from lesion.errors import LesionError
from lesion.data.synthetic import ensure_synthetic
from lesion.data.transforms import EvalPreset, Preset, TrainPreset

log = logging.getLogger(__name__)


class LesionDataset(Dataset):
    """Square images of one split (optionally a subset of its rows) with their class indices.

    Items are ``(image, label)``, or ``(image, metadata, label)`` when the split's encoded
    patient metadata is given.

    Args:
        images: the split's square images (cached or decoded).
        transform: preset applied to each H×W×3 uint8 RGB square.
        indices: rows of the split to use (all when ``None``).
        metadata: N×D float32 encoded metadata of every row of the split (not only of
            ``indices``), or ``None``.
    """

    def __init__(self, images: SquareImages, transform: Preset, indices: np.ndarray | None = None,
                 metadata: np.ndarray | None = None):
        self.images = images
        self.transform = transform
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices)
        self.metadata = metadata

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def table(self) -> SplitTable:
        return self.images.table

    @property
    def ids(self) -> list[str]:
        return [self.table.ids[i] for i in self.indices]

    @property
    def labels(self) -> np.ndarray:
        return self.table.labels[self.indices]

    @property
    def metadata_rows(self) -> np.ndarray | None:
        """The encoded metadata of this dataset's items, in order (``None`` without metadata)."""
        return None if self.metadata is None else self.metadata[self.indices]

    def __getitem__(self, item: int) -> tuple:
        row = int(self.indices[item])
        image, label = self.transform(self.images[row]), int(self.table.labels[row])
        if self.metadata is None:
            return image, label
        return image, torch.from_numpy(self.metadata[row]), label


def default_workers(num_workers: int | None) -> int:
    """``num_workers``, or when ``None`` (cores per visible GPU, or all cores) − 1, at most 8."""
    if num_workers is not None:
        return num_workers
    return max(0, min(8, available_cores() // max(1, torch.cuda.device_count()) - 1))


def seed_worker_transform(worker_id: int) -> None:
    """``worker_init_fn``: give each worker's augmentation its own seed.

    ``info.seed`` differs per worker and per DataLoader iterator and derives from the main
    process's torch seed, so augmentations vary across workers and epochs yet are reproducible.
    """
    info = get_worker_info()
    info.dataset.transform.set_random_seed(info.seed % 2**32)


class IsicDataModule(pl.LightningDataModule):
    """Train/val/test loaders for one layout: an official one (ISIC 2017–2024, HAM10000, PAD-UFES-20) or your
    own data.

    When the layout has no validation split on disk, a seeded stratified hold-out of the
    training split serves as validation; when it has no test split, a hold-out of
    ``test_fraction`` made before it serves as test (or, with ``None``, testing uses validation).
    The training split is then balanced as ``balance`` says (:func:`lesion.balance.plan.plan_balance`);
    :attr:`plan` holds the per-class counts before and after every step, the class weights and
    the sampler's weights. Validation and test are never touched.

    Args:
        layout: a name of :data:`~lesion.data.layouts.LAYOUTS`, or ``folder`` / ``csv`` (your own data).
        root: folder with the official files.
        image_size: side of the square network input.
        batch_size: images per batch.
        num_workers: DataLoader worker processes (0 = load in the main process; ``None``: see
            :func:`default_workers`).
        val_fraction: share of each training class held out when there is no validation split.
        test_fraction: share held out for testing, first, when there is no test split (grouped as
            the validation split is); ``None`` tests on the validation split instead (warned).
        mean, std: normalisation of the backbone's weights.
        seed: seed of the hold-out and of the augmentation in the main process.
        synthetic: generate a synthetic dataset at ``root`` on first use (else real data).
        synthetic_n, synthetic_seed: its number of training images and its seed.
        split_by: ``auto`` (by lesion or patient when the layout's grouping file is present, else
            by image), ``lesion`` / ``patient`` (requires that file) or ``image``; applies to every
            split made here.
        fold: ``"k/K"`` validates on fold k of a K-fold split of the training split (the
            official validation split is then not used), or ``None``.
        cache: read images from the pre-resized cache (built on first use), else decode each time.
        cache_size: side of the cached squares (``None``: 9/7 × ``image_size``, 288 for 224).
        cache_dir: folder of the caches (``None``: ``$LESION_CACHE/images`` or ``~/.cache/lesion/images``).
        max_pixels: source images with more pixels are refused with a clear error.
        color_constancy: colour constancy of every image (``shades_of_gray``, :mod:`lesion.data.color`)
            or ``None``; part of the image cache's key.
        persistent_workers: keep loader workers alive between epochs.
        augment_on: where the training loaders' colour jitter and normalisation run: ``cpu`` (in
            the workers), ``device`` (after transfer, batched, :mod:`lesion.data.device_augmentation`;
            the workers hand over uint8 pixels) or ``auto`` (``device`` when training on a GPU).
            Either way every image draws from the same augmentation distribution.
        balance: the ``balance`` config (downsample, augment, class_weight, sampler); ``None``
            leaves the training split as it is.
        classes, csv, images, image_column, label_column, label_columns, group_column,
            age_column, sex_column, site_column, skin_tone_column: your own data (``layout`` ``folder`` or
            ``csv``),
            see :mod:`lesion.data.custom`.
        extra: external training data, ``[{"layout": NAME, "root": DIR}, …]`` (:mod:`lesion.data.external`);
            :attr:`sources` then reports what each source added and dropped.
        metadata: give every item its patient metadata (:mod:`lesion.data.metadata`), encoded by
            an encoding fitted on the training images (:attr:`metadata_encoding`).
        metadata_encoding: encode with this one instead (a checkpoint's, for evaluation).
    """

    def __init__(self, layout: str, root: str, image_size: int = 224, batch_size: int = 32,
                 num_workers: int | None = None, val_fraction: float = 0.15,
                 test_fraction: float | None = None,
                 mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225), seed: int = 0,
                 synthetic: bool = False, synthetic_n: int = 240, synthetic_seed: int = 0,
                 split_by: str = "auto", fold: str | None = None, cache: bool = True,
                 cache_size: int | None = None, cache_dir: str | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, color_constancy: str | None = None,
                 persistent_workers: bool = True, augment_on: str = "auto",
                 balance: dict | None = None, classes: Sequence[str] | None = None, csv: str | None = None,
                 images: str | None = None, image_column: str = "image", label_column: str | None = None,
                 label_columns: Sequence[str] | None = None, group_column: str | None = None,
                 age_column: str | None = None, sex_column: str | None = None, site_column: str | None = None,
                 skin_tone_column: str | None = None, extra: Sequence[dict] = (), metadata: bool = False,
                 metadata_encoding: dict | None = None):
        super().__init__()
        self.layout = layout_of({"layout": layout, "root": root, "classes": classes, "csv": csv, "images": images,
                                 "image_column": image_column, "label_column": label_column,
                                 "label_columns": label_columns, "group_column": group_column,
                                 "age_column": age_column, "sex_column": sex_column, "site_column": site_column,
                                 "skin_tone_column": skin_tone_column})
        self.root = Path(root).expanduser()
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, default_workers(num_workers)
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.synthetic, self.synthetic_n, self.synthetic_seed = synthetic, synthetic_n, synthetic_seed
        self.mean, self.std = tuple(mean), tuple(std)
        self.split_by = split_by
        self.fold = None if fold is None else parse_fold("dataset.fold", fold)
        self.cache_size = square_size(image_size, cache_size)
        self.cache_dir = (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) if cache else None
        self.max_pixels, self.persistent_workers = max_pixels, persistent_workers
        self.augment_on = augment_on
        self._device_stages: dict[bool, DeviceAugmentation] = {}  # by jitter, built on first use
        self.color_constancy = color_constancy
        self.balance = balance or {}
        self.extra = [dict(entry) for entry in extra or ()]
        self.sources: dict | None = None
        self.metadata = metadata or metadata_encoding is not None
        self.metadata_encoding = None if metadata_encoding is None else MetadataEncoding.from_dict(metadata_encoding)
        self.train_set = self.val_set = self.test_set = None
        self.plan: BalancePlan | None = None
        self.split: dict | None = None

    @property
    def classes(self) -> list[str]:
        return list(self.layout.classes)

    def prepare_data(self) -> None:
        if self.synthetic:
            ensure_synthetic(self.layout.name, self.root, n=self.synthetic_n, seed=self.synthetic_seed)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train = read_split(self.layout, self.root, "train")
        val = read_split(self.layout, self.root, "val")
        test = read_split(self.layout, self.root, "test")
        train_preset = TrainPreset(self.image_size, self.mean, self.std)
        train_preset.set_random_seed(self.seed)
        eval_preset = EvalPreset(self.image_size, self.mean, self.std)
        train, val, test = (None if t is None else self._squares(t) for t in (train, val, test))
        needs_groups = val is None or self.fold is not None or (test is None and self.test_fraction is not None)
        grouping = None if self.split_by == "image" or not needs_groups else find_grouping(self.layout, self.root)
        if needs_groups and self.split_by in ("lesion", "patient") and (grouping is None or grouping.kind != self.split_by):
            files = [g.file for g in self.layout.groupings if g.kind == self.split_by]
            raise LesionError("dataset.split_by", f"{self.split_by} needs a {self.split_by}-grouping file in {self.root}",
                              f"add one of {', '.join(files) or '(none for this layout)'} or use dataset.split_by=image")
        groups = None if grouping is None else read_groups(self.layout, self.root, train.table.ids)
        grouped_by = "image" if groups is None else grouping.kind
        rest = np.arange(len(train))  # training rows not held out for testing
        if test is None and self.test_fraction is not None:
            # The rest is split again (validation hold-out or folds): leave it the groups that needs.
            again = val is None or self.fold is not None
            rest, tested = split_indices(train.table.labels, self.seed, self.test_fraction, None, groups,
                                         "dataset.test_fraction", (self.fold[1] if self.fold else 2) if again else 1)
            log.warning("%s: no test split; testing on a %.0f%% hold-out of the %d training images, by %s (seed %d): "
                        "%d images, %.1f%% held out", self.root, 100 * self.test_fraction, len(train), grouped_by,
                        self.seed, len(tested), 100 * len(tested) / len(train))
            self.test_set = LesionDataset(train, eval_preset, tested)
        if val is None or self.fold is not None:
            keep, held = split_indices(train.table.labels[rest], self.seed, self.val_fraction, self.fold,
                                       None if groups is None else groups[rest])
            validation = "fold" if self.fold else "holdout"
            how = f"fold {self.fold[0]}/{self.fold[1]}" if self.fold else f"{self.val_fraction:.0%} hold-out"
            log.warning("%s: validating on a %s of the %d training images, by %s (seed %d): %d images, "
                        "%.1f%% held out%s", self.root, how, len(rest), grouped_by, self.seed, len(held),
                        100 * len(held) / len(rest), "; the official validation split is not used" if val is not None else "")
            self.train_set = LesionDataset(train, train_preset, rest[keep])
            self.val_set = LesionDataset(train, eval_preset, rest[held])
        else:
            self.train_set = LesionDataset(train, train_preset, rest)
            self.val_set = LesionDataset(val, eval_preset)
            validation = "official"
            if test is not None or self.test_fraction is None:
                grouped_by = "image"  # no split made here
        if test is not None:
            self.test_set = LesionDataset(test, eval_preset)
            tested_by = "official"
        elif self.test_fraction is not None:
            tested_by = "holdout"
        else:
            log.warning("%s: no test split; testing on the validation split", self.root)
            self.test_set = self.val_set
            tested_by = "validation"
        self.split = {
            "validation": validation, "seed": self.seed, "val_fraction": self.val_fraction,
            "fold": None if self.fold is None else f"{self.fold[0]}/{self.fold[1]}", "grouped_by": grouped_by,
            "val_images": len(self.val_set), "val_ids_sha256": ids_digest(self.val_set.ids), "test": tested_by,
        }
        if tested_by == "holdout":
            self.split.update(test_fraction=self.test_fraction, test_images=len(self.test_set),
                              test_ids_sha256=ids_digest(self.test_set.ids))
        if self.extra:
            self._add_external(train)
        for name, dataset in (("train", self.train_set), ("val", self.val_set), ("test", self.test_set)):
            counts = self.class_counts(dataset)
            log.info("%s split: %d images %s", name, len(dataset), counts)
            absent = [c for c, n in counts.items() if n == 0]
            if absent:
                log.warning("%s split has no images of class %s; its recall and AUC are undefined "
                            "and left out of the averages", name, ", ".join(absent))
        if self.metadata:
            self._attach_metadata(train, val, test)
        self.plan = plan_balance(self.train_set.labels, self.classes, self.balance, self.seed)
        self.train_set.indices = self.train_set.indices[self.plan.indices]

    def _squares(self, table: SplitTable) -> SquareImages:
        """The square images of a split as this DataModule's options say (size, cache, pixel limit, colours)."""
        return SquareImages(table, self.cache_size, self.cache_dir, self.max_pixels, self.color_constancy)

    def _add_external(self, train: SquareImages) -> None:
        """Append the kept training images of ``self.extra`` to the training set (after the primary's rows,
        which keep their positions, so validation and test are unchanged)."""
        held = [*self.val_set.ids, *self.test_set.ids]
        found = read_group_map(self.layout, self.root)
        held_groups = {found[1][i] for i in held if i in found[1]} if found else set()
        every = {*train.table.ids, *held}
        table, report = add_external(train.table, self.root, held, held_groups, every, self.extra)
        combined = self._squares(table)
        for dataset in (self.train_set, self.val_set, self.test_set):
            if dataset.images is train:
                dataset.images = combined
        primary = self.class_counts(self.train_set)
        self.train_set.indices = np.concatenate([self.train_set.indices, np.arange(len(train), len(table))])
        report[self.layout.name]["train"] = primary
        self.sources = report

    def _attach_metadata(self, *splits: SquareImages | None) -> None:
        """Give every dataset its split's encoded metadata, fitting the encoding on the training images
        unless one was given."""
        tables = {}
        for images in splits:
            if images is None:
                continue
            table = images.table
            found = read_metadata(self.layout, self.root, table.split, table.ids)
            if found is None:
                files = ", ".join(m.file for m in self.layout.metadata.get(table.split, ())) or "none for this layout"
                raise LesionError(self.root, f"has no patient metadata for the {table.split} split ({files})",
                                  "add the metadata file, or use model.metadata=false")
            tables[id(images)] = found
        if self.metadata_encoding is None:
            train = tables[id(self.train_set.images)]
            self.metadata_encoding = MetadataEncoding.fit(train.iloc[self.train_set.indices], self.layout.sites)
        encoded = {key: self.metadata_encoding.encode(table) for key, table in tables.items()}
        for dataset in {id(d): d for d in (self.train_set, self.val_set, self.test_set)}.values():
            dataset.metadata = encoded[id(dataset.images)]

    def balance_report(self) -> dict:
        """What ``balance.json`` holds: the balance plan's report, and with external data its :attr:`sources`."""
        return {**self.plan.report(), **({"sources": self.sources} if self.sources else {})}

    def class_counts(self, dataset: LesionDataset) -> dict[str, int]:
        """Images per class of ``dataset``, in class order."""
        return counts_of(dataset.labels, self.classes)

    def loader(self, dataset: LesionDataset, train: bool = False, sampler: Sampler | None = None) -> DataLoader:
        """DataLoader over ``dataset`` (its image cache built first when enabled).

        Args:
            dataset: the items.
            train: shuffle them (or draw them with the balance plan's weighted sampler) and drop a
                last batch of one.
            sampler: for evaluation, the items to load in their order (default: all, in order).
        """
        dataset.images.build()
        if train and self.plan.sample_weights is not None:
            sampler = WeightedRandomSampler(self.plan.sample_weights.tolist(), num_samples=len(dataset), replacement=True)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            # A final batch of one image breaks BatchNorm on 1×1 feature maps (small images).
            drop_last=train and len(dataset) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=seed_worker_transform if self.num_workers > 0 else None,
        )

    @property
    def augments_on_device(self) -> bool:
        """Whether the Trainer's loaders hand over uint8 pixels for the device to finish (``augment_on``)."""
        if self.augment_on == "auto":
            return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return self.augment_on == "device"

    def _for_trainer(self, dataset: LesionDataset) -> LesionDataset:
        """``dataset`` as the Trainer's loaders give it: handing over uint8 pixels when augmenting on the device."""
        if not self.augments_on_device:
            return dataset
        handed_over = copy.copy(dataset)
        handed_over.transform = dataset.transform.handed_over()
        return handed_over

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """On the device: finish batches of uint8 pixels (training's jitter while fitting, then normalisation),
        in the precision's input type (Lightning converts batches before transfer, when they are still uint8)."""
        if not isinstance(batch, (list, tuple)) or batch[0].dtype != torch.uint8:
            return batch
        jitter = self.trainer.training
        if jitter not in self._device_stages:
            self._device_stages[jitter] = DeviceAugmentation(self.mean, self.std, jitter)
        return self.trainer.precision_plugin.convert_input([self._device_stages[jitter](batch[0]), *batch[1:]])

    def train_dataloader(self) -> DataLoader:
        return self.loader(self._for_trainer(self.train_set), train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self._for_trainer(self.val_set), sampler=evaluation_sampler(self.val_set, self.trainer))

    def test_dataloader(self) -> DataLoader:
        return self.loader(self._for_trainer(self.test_set), sampler=evaluation_sampler(self.test_set, self.trainer))


def evaluation_sampler(dataset: Sized, trainer: pl.Trainer | None) -> Sampler | None:
    """This process's share of ``dataset`` to validate or test under DDP, every item in exactly one
    share; ``None`` (all items, in order) in a single process.

    Lightning's own ``DistributedSampler`` makes the shares equal by repeating items, which the
    metrics would then count twice. Here shares differ by at most one item, so a process may run
    one batch fewer: evaluation synchronises nothing per batch, and torchmetrics gathers states of
    unequal length.
    """
    shares = trainer.distributed_sampler_kwargs if trainer is not None else None
    if not shares or shares["num_replicas"] == 1:
        return None
    if len(dataset) < shares["num_replicas"]:  # a process without a batch would skip the metrics' gathering
        raise LesionError("trainer.devices", f"{shares['num_replicas']} processes share an evaluation split of "
                          f"{len(dataset)} images, and each needs one", "train on fewer devices")
    return UnrepeatedDistributedSampler(dataset, shuffle=False, **shares)


def ids_digest(ids: Sequence[str]) -> str:
    """SHA-256 of image ids in order: identifies a split's membership."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()
