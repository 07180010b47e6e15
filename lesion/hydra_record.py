"""A run's ``.hydra/`` record, written only once its options are accepted.

Hydra writes ``.hydra/`` when a job starts, before any option is checked, so a refused run
would leave (or, resuming, overwrite) a record of a run that never happened. The configs set
``hydra.output_subdir: null`` and a delayed log file; :func:`write_record` writes the same
three files once the run is accepted and its work starts, and :func:`discard_refused` puts the
output folder of a refused run back as the job found it (:class:`FolderState`): no new folder,
and a resumed run's files untouched.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lesion.errors import LesionError, exit_with
from lesion.files import write_atomic

# The file write_record writes first: a job that wrote it had started its run.
_RECORD = Path(".hydra") / "config.yaml"


def write_record(cfg: DictConfig, run_dir: Path) -> None:
    """``<run_dir>/.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml``, as Hydra writes them."""
    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    folder = Path(run_dir) / ".hydra"
    write_atomic(folder / "config.yaml", OmegaConf.to_yaml(cfg))
    write_atomic(folder / "hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra})))
    write_atomic(folder / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(hydra.overrides.task))))


def dotted(tree: dict, prefix: str = "") -> dict:
    """A config tree with dotted keys (``{"optimizer": {"lr": 1e-3}}`` → ``{"optimizer.lr": 1e-3}``); lists
    and empty groups stay values."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _stamp(path: Path) -> tuple[int, int] | None:
    """A file's inode and modification time (an atomic rewrite changes both), ``None`` when absent."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


@dataclass(frozen=True)
class FolderState:
    """What a job's output folder held when the job started, as far as the job itself writes it
    before its work starts: its log files (Hydra's delayed one) and its record.

    Args:
        folder: the output folder.
        empty: the folder was absent or empty (Hydra makes it for the job).
        logs: each log file of the job in the folder → its length then (``None``: not there).
        record: the record's :func:`_stamp` then.
        workdir: the folder the command was started in (Hydra's ``runtime.cwd``), if known: empty
            folders between it and ``folder`` (Hydra's ``outputs/train/`` on a first run) go too.
    """

    folder: Path
    empty: bool
    logs: dict[Path, int | None]
    record: tuple[int, int] | None
    workdir: Path | None = None

    @classmethod
    def of(cls, folder: str | Path) -> FolderState:
        """The state of ``folder`` now."""
        root = Path(folder).resolve()
        files = [Path(h.baseFilename) for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
        logs = {log: log.stat().st_size if log.is_file() else None for log in files if log.resolve().parent == root}
        empty = not root.is_dir() or not any(root.iterdir())
        workdir = Path(HydraConfig.get().runtime.cwd).resolve() if HydraConfig.initialized() else None
        return cls(root, empty, logs, _stamp(root / _RECORD), workdir)


def discard_refused(before: FolderState | None) -> None:
    """Put the output folder of a refused job back as it was ``before``: the job's logs cut back to
    their length (removed when new), then the folder removed when the job found it empty and nothing
    else was put in it since, with the folders above it that this leaves empty, up to the folder the
    command was started in.

    A job that wrote its record (:func:`write_record`) had started its run: its folder is kept as it
    is (the checkpoints written so far resume it). Files the job did not write are never touched.
    """
    if before is None or _stamp(before.folder / _RECORD) != before.record:
        return
    for log, size in before.logs.items():
        with suppress(OSError):  # what cannot be undone stays: the refusal is still reported
            if size is None:
                log.unlink(missing_ok=True)
            elif log.stat().st_size > size:
                os.truncate(log, size)  # the lines this job appended
    if not before.empty:
        return
    folder = before.folder
    while True:
        try:
            folder.rmdir()
        except OSError:  # not empty: someone else's files are in it
            return
        folder = folder.parent
        if before.workdir is None or before.workdir not in folder.parents:
            return


def run_or_refuse(run: Callable[[DictConfig], object], cfg: DictConfig, folder: str | Path | None) -> object:
    """``run(cfg)`` for an entry point, returning what it returns; a refusal puts ``folder`` (if any) back
    as the job found it (:func:`discard_refused`) and exits with its one line."""
    before = None if folder is None else FolderState.of(folder)
    try:
        return run(cfg)
    except LesionError as error:
        discard_refused(before)
        exit_with(error)
