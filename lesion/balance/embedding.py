"""Pooled embeddings of a dataset (``LesionNet.embed``), cached on disk.

An embedding is the pair ``(avgpool F, maxpool F)`` of the backbone's feature map; the heads
need nothing else (``head_from_pooled(*embed(x)) == forward(x)``), so SMOTE-Tomek can resample
them and the head trains on the result exactly as it would on images.

The cache key covers everything the embeddings depend on: the backbone's weights; the image
cache's key of the split (source files with their sizes and mtimes, ids, square size; see
:func:`lesion.data.cache.cache_key`); the rows embedded (a subset or DDP shard); the preset as
albumentations serialises it (image size, normalisation, augmentation); and the augmentation
seed. A re-processed copy of a dataset, another synthetic seed, checkpoint or transform thus never
reuses stale embeddings. Augmentations are seeded per item from that seed, so batch size and
loader workers, which the key leaves out, do not change them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from lesion.data.cache import cache_key
from lesion.data.datamodule import LesionDataset
from lesion.files import atomic_path
from lesion.models.net import LesionNet

log = logging.getLogger(__name__)

CACHE_VERSION = 4  # raised whenever one key would give other pixels (e.g. how a seed drives the augmentation)


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class _SeededItems(Dataset):
    """``dataset`` with the augmentation of item ``i`` reseeded from ``(seed, i)`` before it is drawn.

    The pixels then depend on the seed and the item alone, not on which loader worker, batch or
    earlier draw reached the preset first; repeated rows (extra views) still differ.
    """

    def __init__(self, dataset: LesionDataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int]:
        state = np.random.SeedSequence([self.seed, item]).generate_state(1)[0]
        self.dataset.transform.set_random_seed(int(state))
        return self.dataset[item]


@torch.no_grad()
def embed(net: LesionNet, dataset: LesionDataset, batch_size: int, num_workers: int, seed: int = 0,
          desc: str = "embed") -> tuple[np.ndarray, np.ndarray]:
    """Pooled features of every item of ``dataset`` in order.

    Augmented datasets get reproducible augmentations from ``seed``, the same for any
    ``batch_size`` and ``num_workers``.

    Returns:
        ``avg`` and ``mx``, N×C float32 each.
    """
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    dataset.images.build()
    # Its own generator: a loader draws its base seed from the global one, so a run whose embeddings
    # come from the cache would then train the head differently from one that computed them.
    loader = DataLoader(_SeededItems(dataset, seed), batch_size=batch_size, num_workers=num_workers, shuffle=False,
                        generator=torch.Generator().manual_seed(seed))
    avgs, maxes = [], []
    try:
        for batch in tqdm(loader, desc=desc, unit="batch"):
            avg, mx = net.embed(batch[0].to(device))  # items are (image, [metadata,] label)
            avgs.append(avg.float().cpu())
            maxes.append(mx.float().cpu())
    finally:
        net.train(was_training)
    return torch.cat(avgs).numpy(), torch.cat(maxes).numpy()


def embedding_key(net: LesionNet, dataset: LesionDataset, seed: int) -> str:
    """Name of the cached embeddings of ``dataset``: a digest of all they depend on (module docstring)."""
    images = dataset.images
    return hashlib.sha256(json.dumps({
        "version": CACHE_VERSION, "weights": weights_digest(net.backbone),
        "images": cache_key(images.table, images.size, images.color_constancy),  # square size, colours too
        "rows": dataset.indices.tolist(), "transform": A.to_dict(dataset.transform.transform), "seed": seed,
    }, sort_keys=True).encode()).hexdigest()[:24]


def cached_embed(net: LesionNet, dataset: LesionDataset, cache_dir: str | Path, batch_size: int,
                 num_workers: int, tag: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`embed`, read from / written to ``cache_dir`` under :func:`embedding_key`.

    Args:
        tag: short name for the progress bar and log (``train``, ``val``, …).
    """
    key = embedding_key(net, dataset, seed)
    path = Path(cache_dir).expanduser() / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path) as cached:
                avg, mx = cached["avg"], cached["mx"]
            if len(avg) == len(dataset):
                log.info("%s embeddings read from cache %s", tag, path)
                return avg, mx
        except (OSError, ValueError, KeyError):
            log.warning("%s: unreadable embedding cache, recomputing", path)
    avg, mx = embed(net, dataset, batch_size, num_workers, seed, desc=f"embed {tag}")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, avg=avg, mx=mx)
    log.info("%s embeddings (%d × 2 × %d) cached at %s", tag, len(avg), avg.shape[1], path)
    return avg, mx
