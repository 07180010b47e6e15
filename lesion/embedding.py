"""Pooled embeddings of a dataset (``LesionNet.embed``), cached on disk.

An embedding is the pair ``(avgpool F, maxpool F)`` of the backbone's feature map; the heads
need nothing else (``head_from_pooled(*embed(x)) == forward(x)``), so SMOTE-Tomek can resample
them and the head trains on the result exactly as it would on images.

The cache key covers the backbone's weights, the image ids in order, the preprocessing and the
augmentation seed, so a changed checkpoint, data or transform never reuses stale embeddings.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from lesion.data.datamodule import LesionDataset, seed_worker_transform
from lesion.files import atomic_path
from lesion.models.net import LesionNet

log = logging.getLogger(__name__)

CACHE_VERSION = 2


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def embed(net: LesionNet, dataset: LesionDataset, batch_size: int, num_workers: int, seed: int = 0,
          desc: str = "embed") -> tuple[np.ndarray, np.ndarray]:
    """Pooled features of every item of ``dataset`` in order.

    Augmented datasets get reproducible, per-worker augmentations from ``seed``.

    Returns:
        ``avg`` and ``mx``, N×C float32 each.
    """
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    dataset.images.build()
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False,
                        worker_init_fn=seed_worker_transform if num_workers else None,
                        generator=torch.Generator().manual_seed(seed))
    avgs, maxes = [], []
    try:
        for images, _ in tqdm(loader, desc=desc, unit="batch"):
            avg, mx = net.embed(images.to(device))
            avgs.append(avg.float().cpu())
            maxes.append(mx.float().cpu())
    finally:
        net.train(was_training)
    return torch.cat(avgs).numpy(), torch.cat(maxes).numpy()


def cached_embed(net: LesionNet, dataset: LesionDataset, cache_dir: str | Path, batch_size: int,
                 num_workers: int, tag: str, transform_key: dict, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`embed`, read from / written to ``cache_dir`` under a key of weights, data and transform.

    Args:
        tag: short name for the progress bar and log (``train``, ``val``, …).
        transform_key: everything that shapes the input images (size, normalisation, augmentation
            seed), as JSON-serialisable values.
    """
    key = hashlib.sha256(json.dumps({
        "version": CACHE_VERSION, "weights": weights_digest(net.backbone),
        "ids": dataset.ids, "transform": transform_key, "seed": seed,
    }, sort_keys=True).encode()).hexdigest()[:24]
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
