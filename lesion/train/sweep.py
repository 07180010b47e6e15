"""Hydra jobs and sweeps: :func:`run_job` runs one job of ``train.py`` (alone or in a ``-m`` sweep).

In a sweep a failing job records its error and the sweep goes on; each job uses one device, and
on a multi-GPU machine each claims a free GPU with a lock file (:func:`claimed_gpu`): with a
parallel local launcher (``hydra/launcher=joblib hydra.launcher.n_jobs=<GPUs>``) several jobs
start at once; each takes the first GPU whose ``<lock_dir>/gpu-<i>.lock`` it can lock
exclusively and holds it until the job ends (the operating system releases the lock even when
the job is killed), so no two running jobs share a GPU.
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lesion.errors import LesionError
from lesion.files import write_atomic
from lesion.hydra_record import write_record
from lesion.train.run import run

log = logging.getLogger(__name__)


def run_job(cfg: DictConfig) -> float:
    """:func:`run` as a Hydra job, returning the best validation BACC (what sweepers optimise).

    Sweepers never see test metrics: they stay in ``test_metrics.json``.

    In a multirun sweep a failing job writes its error to ``<run_dir>/error.txt`` and returns NaN,
    so the sweep goes on and ``python -m lesion.summary`` lists it; a single run raises. A sweep
    job uses one device: more is refused before anything runs (DDP inside a Hydra sweep
    duplicates run directories or hangs), and on a multi-GPU machine each job claims a GPU
    of its own (:func:`lesion.train.sweep.claimed_gpu`).
    """
    if not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
        return run(cfg)["val"]["bacc"]
    devices = devices_per_job(cfg.trainer)
    if devices > 1:
        raise LesionError("trainer.devices", f"a sweep (-m) runs one device per job, this one asks for {devices} "
                          f"(strategy {cfg.trainer.get('strategy', 'auto')})",
                          "sweep with trainer=gpu (one GPU per job; hydra/launcher=joblib runs one job per GPU "
                          "at once), or train one configuration at a time with trainer=ddp")
    if torch.cuda.device_count() > 1 and cfg.trainer.accelerator in ("gpu", "cuda", "auto"):
        with claimed_gpu(Path(HydraConfig.get().sweep.dir) / ".gpu-locks", torch.cuda.device_count()) as index:
            cfg.trainer.devices = [index]
            return _recorded_run(cfg)
    return _recorded_run(cfg)


def _recorded_run(cfg: DictConfig) -> float:
    """:func:`run`'s validation BACC; on failure the error goes to ``<run_dir>/error.txt`` and NaN is returned."""
    try:
        return run(cfg)["val"]["bacc"]
    except Exception as error:  # noqa: BLE001 — any failure is recorded, the sweep continues
        log.exception("job failed")
        write_record(cfg, Path(cfg.run_dir))  # lesion.summary lists the job with its error
        message = str(error) if isinstance(error, LesionError) else f"{type(error).__name__}: {error}"
        write_atomic(Path(cfg.run_dir) / "error.txt", message.splitlines()[0] + "\n")
        return float("nan")


def devices_per_job(trainer: DictConfig) -> int:
    """Number of devices one run of ``trainer`` uses (``-1``/``auto`` count the visible GPUs)."""
    devices = trainer.get("devices", 1)
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return len(devices)
    if str(devices) in ("-1", "auto"):
        gpu = trainer.get("accelerator") in ("gpu", "cuda", "auto")
        return max(1, torch.cuda.device_count()) if gpu else 1
    text = str(devices)
    return len([d for d in text.split(",") if d.strip()]) if "," in text else int(text)  # "0,1": GPU indices


@contextmanager
def claimed_gpu(lock_dir: Path, n_gpus: int, poll_s: float = 5.0) -> Iterator[int]:
    """Hold a GPU no other job holds (waiting while all ``n_gpus`` are taken); yields its index.

    The claim ends with the ``with`` block, or with the process.
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for index in range(n_gpus):
            handle = open(lock_dir / f"gpu-{index}.lock", "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                handle.close()
                if isinstance(error, BlockingIOError):
                    continue
                raise
            log.info("this job runs on GPU %d (lock %s)", index, handle.name)
            with handle:  # closing the file releases the lock
                yield index
            return
        if not waited:
            log.info("all %d GPUs are taken by other jobs of the sweep; waiting", n_gpus)
            waited = True
        time.sleep(poll_s)
