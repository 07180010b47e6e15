"""A run's ``.hydra/`` record, written only once its options are accepted.

Hydra writes ``.hydra/`` when a job starts, before any option is checked, so a refused run
would leave (or, resuming, overwrite) a record of a run that never happened. The configs set
``hydra.output_subdir: null`` and a delayed log file; :func:`write_record` writes the same
three files after :mod:`lesion.options` accepted the config, and :func:`discard_refused`
removes the output folder Hydra made for a run that was refused.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

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


def discard_refused(folder: str | Path | None) -> None:
    """Remove the output folder Hydra made for a refused run: one without a ``.hydra/`` record that
    holds nothing but the run's log file (folders of accepted runs are never touched)."""
    if folder is None:
        return
    path = Path(folder)
    try:
        if not path.is_dir() or (path / ".hydra").exists():
            return
        contents = list(path.iterdir())
        if all(p.is_file() and p.suffix == ".log" for p in contents):
            for p in contents:
                p.unlink()
            path.rmdir()
    except OSError:
        pass
