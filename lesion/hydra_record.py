"""A run's ``.hydra/`` record, written only once its options are accepted.

Hydra writes ``.hydra/`` when a job starts, before any option is checked, so a refused run
would leave (or, resuming, overwrite) a record of a run that never happened. The configs set
``hydra.output_subdir: null`` and a delayed log file; :func:`write_record` writes the same
three files after :mod:`lesion.options` accepted the config, and :func:`discard_refused`
removes the output folder Hydra made for a run that was refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lesion.errors import LesionError, exit_with
from lesion.files import write_atomic


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


def discard_refused(folder: str | Path | None) -> None:
    """Remove what a refused run left in its output folder: the job's log (only in a folder without
    a ``.hydra/`` record, i.e. of no accepted run), then the folder itself if that left it empty."""
    if folder is None:
        return
    path = Path(folder)
    try:
        if not path.is_dir() or (path / ".hydra").exists():
            return
        if HydraConfig.initialized():
            (path / f"{HydraConfig.get().job.name}.log").unlink(missing_ok=True)
        if not any(path.iterdir()):
            path.rmdir()
    except OSError:
        pass


def run_or_refuse(run: Callable[[DictConfig], object], cfg: DictConfig, folder: str | Path | None) -> None:
    """``run(cfg)`` for an entry point; a refusal removes what it left in ``folder`` and exits with its one line."""
    try:
        run(cfg)
    except LesionError as error:
        discard_refused(folder)
        exit_with(error)
