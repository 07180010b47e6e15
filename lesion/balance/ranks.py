"""Work shared out over DDP ranks: a dataset's shards, their results gathered, one result broadcast.

Without DDP (one process) each function does the work in this process and returns the same shapes.
A failure on any rank is raised on every rank, so none waits forever on a collective.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch

from lesion.data.datamodule import LesionDataset
from lesion.errors import EchoedError, LesionError


def shard(dataset: LesionDataset, rank: int, world: int) -> LesionDataset:
    """Every ``world``-th entry of ``dataset`` from ``rank`` on (this rank's share of the embedding)."""
    return LesionDataset(dataset.images, dataset.transform, dataset.indices[rank::world], dataset.metadata)


def unshard(parts: list[np.ndarray]) -> np.ndarray:
    """Inverse of :func:`shard` over all ranks' results: rows back in dataset order."""
    out = np.empty((sum(len(p) for p in parts), *parts[0].shape[1:]), dtype=parts[0].dtype)
    for rank, part in enumerate(parts):
        out[rank::len(parts)] = part
    return out


def on_every_rank(trainer: pl.Trainer, compute, gather: bool):
    """``compute()`` under DDP: on every rank with the results gathered (``gather``), or on rank 0
    with its result broadcast. A failure on any rank is raised on every rank, so none waits forever;
    rank 0 reports it, the others exit without repeating it.

    Returns:
        With ``gather``, a tuple of per-rank lists (one per element of ``compute()``'s tuple);
        else ``compute()``'s result. Without DDP, the same shapes from this process alone.
    """
    rank, world = trainer.global_rank, trainer.world_size
    outcome: tuple = ("ok", None)
    if gather or rank == 0:
        try:
            outcome = ("ok", compute())
        except Exception as error:  # noqa: BLE001 — re-raised below, on every rank
            if world == 1:
                raise
            outcome = ("error", str(error) if isinstance(error, LesionError) else f"{type(error).__name__}: {error}")
    if world > 1 and gather:
        outcomes: list = [None] * world
        torch.distributed.all_gather_object(outcomes, outcome)
    elif world > 1:
        outcomes = [outcome]
        torch.distributed.broadcast_object_list(outcomes, src=0)
    else:
        outcomes = [outcome]
    failed = [message for status, message in outcomes if status == "error"]
    if failed:
        first_line = failed[0].splitlines()[0]
        raise LesionError(first_line) if rank == 0 else EchoedError(first_line)
    values = [value for _, value in outcomes]
    return tuple(list(parts) for parts in zip(*values)) if gather else values[0]
