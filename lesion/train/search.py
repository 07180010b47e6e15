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
* :class:`CheckedSearch`: before the sweeper opens the study, a search range Optuna cannot use
  (:func:`check_search_space`) and a study file this search cannot resume (:func:`check_study`)
  are refused in one line, leaving every file as it was.

Caveats: every invocation runs ``hydra.sweeper.n_trials`` more trials; a trial interrupted with
its process stays ``RUNNING`` in the study (its folder keeps ``last.ckpt``) and is not retried.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override
from omegaconf import DictConfig
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.study import Study
from optuna.trial import FrozenTrial, Trial, TrialState

from lesion.errors import LesionError, exit_with
from lesion.evaluate.study import read_study

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


def check_search_space(params: dict[str, str], overrides: list[str]) -> None:
    """Refuse a parameter Optuna cannot search (a log range from 0 or below, a range whose low is
    above its high …), as the sweeper would read it: ``hydra.sweeper.params``, then the command line's
    overrides (the sweeper's own conversion, so the two cannot disagree).

    Args:
        params: ``hydra.sweeper.params`` (parameter → sweep, e.g. ``tag(log, interval(1e-4, 1e-2))``).
        overrides: the command line's overrides (``hydra.overrides.task``).
    """
    for text in [f"{key}={value}" for key, value in params.items()] + list(overrides):
        try:
            (override,) = OverridesParser.create().parse_overrides([text])
            create_optuna_distribution_from_override(override)
        except (HydraException, ValueError, AssertionError, NotImplementedError) as error:
            key, _, value = text.partition("=")
            problem = (str(error).splitlines() or [""])[0] or "Optuna has no distribution for it"
            raise LesionError(key, f"{value} is not a range Optuna can search ({problem})",
                              "use choice(a,b,…), range(low,high) or interval(low,high) with low ≤ high, and "
                              "low > 0 in tag(log, interval(…))") from None


def check_study(sweep_dir: str, study_name: str) -> None:
    """Refuse, without writing to it, a ``<sweep_dir>/optuna.db`` that is not a study this search can
    resume: not an Optuna database (or another optuna's), or one holding another study.

    Args:
        sweep_dir: the sweep folder (a new search when it holds no study file).
        study_name: the search's study (``hydra.sweeper.study_name``).
    """
    found = read_study(sweep_dir)
    if found is not None and study_name is not None and found.name != study_name:
        raise LesionError(Path(sweep_dir) / STUDY_FILE, f"holds the study '{found.name}', and this search is "
                          f"'{study_name}'", f"resume it with hydra.sweeper.study_name={found.name}, or search in "
                          "another hydra.sweep.dir")


class CheckedSearch(Callback):
    """Hydra callback: the search refused in one line (exit status 2) before the sweeper opens its study
    or runs a trial, when :func:`check_search_space` or :func:`check_study` refuses it.

    The sweeper creates the study's database as soon as it is built, and Hydra reports what fails
    there or in the sweep as a traceback; a callback's own exceptions Hydra turns into warnings, so
    this one exits.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweeper = config.hydra.sweeper
        try:
            check_search_space(dict(sweeper.params or {}), list(config.hydra.overrides.task))
            check_study(config.hydra.sweep.dir, sweeper.study_name)
        except LesionError as error:
            exit_with(error)
