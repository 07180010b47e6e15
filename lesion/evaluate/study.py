"""The Optuna study of a ``hparams_search=optuna`` sweep, read back for ``python -m lesion.summary``.

The search keeps its study in ``<sweep>/optuna.db`` and runs each trial in the folder its
``hydra.sweep.subdir`` parameter names (:mod:`lesion.train.search`). The database is read with
optuna as data (trial numbers, states, values, parameters); nothing in it chooses code to run.
optuna is imported only for a sweep that holds a study.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lesion.errors import LesionError

STUDY_FILE = "optuna.db"  # lesion.train.search.STUDY_FILE, without importing optuna for every sweep
_STATES = {"FAIL": "failed"}  # the others read as they are: complete, running, pruned, waiting


@dataclass
class StudyRecord:
    """What the summary shows of a study."""

    name: str
    trials: dict[str, int]  # job folder, relative to the sweep → trial number
    states: Counter  # trial state (complete, failed, running, …) → number of trials
    best: int | None  # number of the best finished trial
    best_folder: str | None  # its job folder
    best_value: float | None  # its value: the validation BACC its job returned
    best_params: dict  # its parameters, without the folder


def read_study(sweep_dir: str | Path) -> StudyRecord | None:
    """The study in ``<sweep_dir>/optuna.db``, or ``None`` for a sweep without one.

    Raises:
        LesionError: optuna is not installed, or the file is not a database of one study.
    """
    path = Path(sweep_dir) / STUDY_FILE
    if not path.is_file():
        return None
    try:
        import optuna
        from sqlalchemy.exc import SQLAlchemyError

        from lesion.train.search import FOLDER_PARAM
    except ImportError:
        raise LesionError(path, "is an Optuna study and optuna is not installed",
                          'pip install "lesion[search]"') from None
    try:
        # Read-only: a file that is not a study is refused, never given optuna's tables.
        storage = optuna.storages.RDBStorage(f"sqlite:///file:{path.resolve()}?mode=ro&uri=true")
        names = [summary.study_name for summary in optuna.get_all_study_summaries(storage)]
        if not names:  # the search stopped before its study was created
            return None
        if len(names) > 1:
            raise LesionError(path, f"holds {len(names)} studies", "keep one search per sweep folder")
        study = optuna.load_study(study_name=names[0], storage=storage)
        trials = study.get_trials(deepcopy=False)
    except (SQLAlchemyError, RuntimeError, AssertionError) as exc:  # not a study, or another optuna's schema
        raise LesionError(path, f"is not a readable Optuna study ({type(exc).__name__})",
                          "repair or remove the file, or read it with the optuna version that wrote it") from None
    folders = {t.number: str(t.params[FOLDER_PARAM]) for t in trials if FOLDER_PARAM in t.params}
    finished = any(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    best = study.best_trial if finished else None  # the trial optimization_results.yaml names
    return StudyRecord(
        name=names[0],
        trials={folder: number for number, folder in folders.items()},
        states=Counter(_STATES.get(t.state.name, t.state.name.lower()) for t in trials),
        best=None if best is None else best.number,
        best_folder=None if best is None else folders.get(best.number),
        best_value=None if best is None else best.value,
        best_params={} if best is None else {k: v for k, v in best.params.items() if k != FOLDER_PARAM},
    )


def describe(study: StudyRecord) -> str:
    """One line: the trials by state, then the best trial, its validation BACC and parameters."""
    states = ", ".join(f"{n} {state}" for state, n in sorted(study.states.items()))
    total = sum(study.states.values())
    head = f"Optuna study '{study.name}': {total} trial{'s' if total != 1 else ''} ({states or 'none'})"
    if study.best is None:
        return f"{head}; no trial finished"
    params = " ".join(f"{key}={value}" for key, value in study.best_params.items())
    where = f" (run_dir {study.best_folder})" if study.best_folder is not None else ""
    return f"{head}; best trial {study.best}{where}: val BACC {study.best_value:.3f} — {params}"
