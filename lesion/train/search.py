"""The Optuna search of ``python train.py -m hparams_search=optuna``: a study that lives in its sweep folder.

``conf/hparams_search/optuna.yaml`` points the hydra-optuna-sweeper at these pieces, so that
running the same command again with the same ``hydra.sweep.dir`` resumes the search:

* :func:`study_storage`: the study in ``<sweep dir>/optuna.db`` (SQLite).
* :class:`ResumedTPESampler`: TPE that does not repeat, after a resume, the points it drew before.
* :func:`configure_trial`: per trial, what the sweeper's ``params`` cannot say: the job folder
  named by the trial number (the sweeper numbers jobs from 0 in every invocation, so a resumed
  search would overwrite the first trials' folders), and focal loss's ``gamma`` only in the
  trials that chose ``loss=focal`` (the other losses have no such option).
* :class:`FailedTrials`: a job that failed (NaN, see :func:`lesion.train.sweep.run_job`) becomes a
  failed trial, which is never the best one.

Caveats: every invocation runs ``hydra.sweeper.n_trials`` more trials; a trial interrupted with
its process stays ``RUNNING`` in the study (its folder keeps ``last.ckpt``) and is not retried.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.study import Study
from optuna.trial import FrozenTrial, Trial, TrialState

STUDY_FILE = "optuna.db"
# The trial parameter that names the job folder (a Hydra override, so it reaches the job).
FOLDER_PARAM = "hydra.sweep.subdir"
# The focusing parameters Lin et al. (Focal Loss for Dense Object Detection, 2017) compared.
FOCAL_GAMMAS = (0.5, 1.0, 2.0, 5.0)


def study_storage(sweep_dir: str) -> optuna.storages.RDBStorage:
    """The SQLite storage ``<sweep_dir>/optuna.db`` (the folder is created).

    Autocommit: optuna 2.10 stamps a new database's schema version on a connection that
    SQLAlchemy 2 never commits, and then fails to read it back (``AssertionError``).
    """
    folder = Path(sweep_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(f"sqlite:///{(folder / STUDY_FILE).resolve()}",
                                      engine_kwargs={"isolation_level": "AUTOCOMMIT"})


class ResumedTPESampler(BaseSampler):
    """:class:`~optuna.samplers.TPESampler` seeded with ``seed`` plus the number of trials the study
    held when this invocation began.

    A new study draws exactly what ``TPESampler(seed=seed)`` draws. A seeded sampler restarts its
    random stream in every process, so a resumed study would otherwise begin by repeating the
    points of its first trials.

    Args:
        seed: the seed of a new study; ``None``: unseeded.
        **tpe: the other :class:`~optuna.samplers.TPESampler` arguments.
    """

    def __init__(self, seed: int | None = None, **tpe: Any):
        self._seed, self._tpe_args = seed, tpe
        self._tpe: TPESampler | None = None

    def _sampler(self, trial: FrozenTrial) -> TPESampler:
        if self._tpe is None:  # the first trial of this invocation: its number counts the earlier ones
            seed = None if self._seed is None else self._seed + trial.number
            self._tpe = TPESampler(seed=seed, **self._tpe_args)
        return self._tpe

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._sampler(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._sampler(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._sampler(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: list[float] | None) -> None:
        self._sampler(trial).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        if self._tpe is not None:
            self._tpe.reseed_rng()


def configure_trial(cfg: DictConfig, trial: Trial) -> None:
    """The sweeper's ``custom_search_space``: called for each trial after its ``params`` are drawn.

    The job folder is ``<sweep dir>/<trial number>``: a one-value integer parameter (Optuna lets an
    integer range differ between trials, not a choice), so ``optimization_results.yaml`` names the
    best trial's folder too. ``loss.gamma`` is drawn from :data:`FOCAL_GAMMAS` only when the trial
    chose ``loss=focal``.
    """
    trial.suggest_int(FOLDER_PARAM, trial.number, trial.number)
    if trial.params.get("loss") == "focal":
        trial.suggest_categorical("loss.gamma", FOCAL_GAMMAS)


class FailedTrials(Callback):
    """Hydra callback: a search job that returned NaN ends as a failed job, so its trial is ``FAIL``.

    The sweeper hands NaN to Optuna as a value, which optuna 2.10 refuses, and the sweeper's
    fallback then fails as well, ending the whole search. A failed job is what the sweeper reports
    as a failed trial; with ``max_failure_rate: 1.0`` the search goes on, as a sweep does.
    """

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN or job_return.status != JobStatus.COMPLETED:
            return
        value = job_return.return_value
        if not (isinstance(value, float) and math.isnan(value)):
            return
        error = Path(config.hydra.runtime.output_dir) / "error.txt"  # written by lesion.train.sweep
        reason = error.read_text().strip() if error.is_file() else "no validation BACC (no checkpoint was saved)"
        job_return.status = JobStatus.FAILED
        job_return.return_value = RuntimeError(f"{error.parent}: {reason}")
