"""Optuna search (``hparams_search=optuna``): the space composes to accepted configs, the study lives in the
sweep folder and resumes in new trial folders, a failed trial is never the best, the best value is the best
trial's logged validation BACC, and ``lesion.summary`` names the best trial."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import sqlite3
from pathlib import Path

import optuna
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf
from optuna.samplers import TPESampler
from optuna.trial import TrialState

from lesion.evaluate import study as study_record
from lesion.evaluate.summary import main as summary_main
from lesion.options import check_train
from lesion.train import search
from lesion.train.search import (FOCAL_GAMMAS, FOLDER_PARAM, FailedTrials, ResumedTPESampler, configure_trial,
                                  study_storage)

REPO = Path(__file__).resolve().parents[1]
STUDY = "lesion"  # conf/hparams_search/optuna.yaml's study_name


def composed(overrides: list[str]):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=["hparams_search=optuna", *overrides], return_hydra_config=True)


def choices(params) -> dict[str, list[str]]:
    """The values of each ``choice(…)`` parameter of ``hydra.sweeper.params``."""
    parsed = OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()])
    return {o.get_key_element(): list(o.sweep_string_iterator()) for o in parsed if o.is_choice_sweep()}


def test_the_search_space_composes_to_configs_lesion_accepts():
    """Every loss × balance choice, focal with every gamma, passes lesion.options (no trial is refused)."""
    cfg = composed(["experiment=quickstart"])
    sweeper = cfg.hydra.sweeper
    assert sweeper.direction == "maximize" and sweeper.n_jobs == 1 and sweeper.sampler.seed is not None
    assert sweeper.storage.sweep_dir == cfg.hydra.sweep.dir and sweeper.study_name == STUDY
    (lr,) = OverridesParser.create().parse_overrides([f"optimizer.lr={sweeper.params['optimizer.lr']}"])
    assert lr.is_interval_sweep() and "log" in lr.value().tags
    space = choices(sweeper.params)
    assert set(space) == {"dataset.batch_size", "loss", "balance"}
    losses = [(loss, gamma) for loss in space["loss"] for gamma in (FOCAL_GAMMAS if loss == "focal" else [None])]
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        for (loss, gamma), balance in itertools.product(losses, space["balance"]):
            overrides = ["hparams_search=optuna", "experiment=quickstart", f"loss={loss}", f"balance={balance}",
                         *([f"loss.gamma={gamma}"] if gamma is not None else [])]
            cfg = compose("train", overrides=overrides)
            cfg.run_dir = "run"  # a Hydra runtime value, unset outside a job
            check_train(OmegaConf.to_container(cfg, resolve=True))


def test_study_storage_creates_a_new_database_and_loads_it_again(tmp_path):
    """optuna 2.10 with SQLAlchemy 2 fails on a new SQLite file unless the storage autocommits."""
    folder = tmp_path / "sweep"
    study = optuna.create_study(study_name=STUDY, storage=study_storage(str(folder)), direction="maximize")
    study.tell(study.ask(), 0.5)
    assert (folder / search.STUDY_FILE).is_file() and study_record.STUDY_FILE == search.STUDY_FILE
    again = optuna.create_study(study_name=STUDY, storage=study_storage(str(folder)), direction="maximize",
                                load_if_exists=True)
    assert [t.value for t in again.trials] == [0.5]


def _draw(study: optuna.Study, n: int) -> list[float]:
    values = []
    for _ in range(n):
        trial = study.ask()
        values.append(trial.suggest_float("lr", 1e-4, 1e-2, log=True))
        study.tell(trial, values[-1])
    return values


def test_resumed_sampler_draws_like_tpe_and_does_not_repeat_after_a_resume():
    storage = optuna.storages.InMemoryStorage()
    first = _draw(optuna.create_study(study_name="s", storage=storage, sampler=ResumedTPESampler(seed=7)), 2)
    assert first == _draw(optuna.create_study(sampler=TPESampler(seed=7)), 2)
    resumed = optuna.create_study(study_name="s", storage=storage, load_if_exists=True,
                                  sampler=ResumedTPESampler(seed=7))
    (third,) = _draw(resumed, 1)
    assert third not in first
    # What a plain seeded TPE does in a new process: it starts its stream again.
    repeat = optuna.create_study(study_name="s", storage=storage, load_if_exists=True, sampler=TPESampler(seed=7))
    assert _draw(repeat, 1) == first[:1]


def test_configure_trial_names_the_folder_and_draws_gamma_only_for_focal():
    study = optuna.create_study(sampler=TPESampler(seed=0))
    losses = ["ce", "focal", "weighted_ce", "focal"]
    for loss in losses:
        with pytest.warns(optuna.exceptions.ExperimentalWarning):
            study.enqueue_trial({"loss": loss})
    for loss in losses:
        trial = study.ask()
        assert trial.suggest_categorical("loss", ["ce", "focal", "weighted_ce"]) == loss  # the enqueued one
        configure_trial(OmegaConf.create(), trial)
        assert trial.params[FOLDER_PARAM] == trial.number
        assert ("loss.gamma" in trial.params) is (loss == "focal")
        if loss == "focal":
            assert trial.params["loss.gamma"] in FOCAL_GAMMAS
        study.tell(trial, 0.0)


@pytest.mark.parametrize("value, error, status", [
    (float("nan"), "balance.sampler: corrects the imbalance twice", JobStatus.FAILED),
    (float("nan"), None, JobStatus.FAILED),
    (0.5, None, JobStatus.COMPLETED),
])
def test_a_job_that_returned_nan_is_a_failed_trial(tmp_path, value, error, status):
    if error:
        (tmp_path / "error.txt").write_text(error + "\n")
    config = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "runtime": {"output_dir": str(tmp_path)}}})
    job = JobReturn(status=JobStatus.COMPLETED, _return_value=value)
    FailedTrials().on_job_end(config=config, job_return=job)
    assert job.status == status
    if status == JobStatus.FAILED:
        with pytest.raises(RuntimeError, match=f"{tmp_path}: {error or 'no validation BACC'}"):
            job.return_value
    else:
        assert job.return_value == value


def test_an_unreadable_study_is_one_error_line(tmp_path, capsys):
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (tmp_path / search.STUDY_FILE).write_text("not a database\n")
    with pytest.raises(SystemExit) as exit_status:
        summary_main([str(tmp_path)])
    assert exit_status.value.code == 2
    assert capsys.readouterr().err == (f"lesion: error: {tmp_path / search.STUDY_FILE}: is not a readable Optuna "
                                       "study (DatabaseError) — repair or remove the file, or read it with the optuna "
                                       "version that wrote it\n")
    assert not (tmp_path / "summary.md").exists()


def test_the_summary_reads_a_database_without_writing_to_it(tmp_path, capsys):
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / ".hydra" / "config.yaml").write_text("seed: 1\n")
    with sqlite3.connect(tmp_path / search.STUDY_FILE) as other:  # some other program's database
        other.execute("CREATE TABLE notes (text)")
    before = (tmp_path / search.STUDY_FILE).read_bytes()
    with pytest.raises(SystemExit):
        summary_main([str(tmp_path)])
    assert "is not a readable Optuna study" in capsys.readouterr().err
    assert (tmp_path / search.STUDY_FILE).read_bytes() == before  # optuna's tables were not added


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _assert_refused(result, says: str) -> None:
    """Exit 2, no traceback, one ``lesion: error:`` line, the last, starting with ``says``."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert [line for line in lines if line.startswith("lesion: error: ")] == lines[-1:], result.stderr[-3000:]
    assert lines[-1].startswith(f"lesion: error: {says}"), lines[-1]


def _not_a_database(path: Path) -> str:
    path.write_text("not a database\n")
    return f"{path}: is not a readable Optuna study (DatabaseError) — "


def _another_programs_database(path: Path) -> str:
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE notes (text)")
    return f"{path}: is not a readable Optuna study ("


def _another_study(path: Path) -> str:
    optuna.create_study(study_name="other", storage=study_storage(str(path.parent)), direction="maximize")
    return f"{path}: holds the study 'other', and this search is '{STUDY}' — "


@pytest.mark.parametrize("make", [_not_a_database, _another_programs_database, _another_study],
                         ids=["not a database", "not a study", "another study"])
def test_a_study_file_the_search_cannot_resume_is_refused_untouched(run_cli, tmp_path, make):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    says = make(sweep / search.STUDY_FILE)
    before = _files(tmp_path)
    result = run_cli("train.py", "-m", "hparams_search=optuna", "experiment=quickstart", f"hydra.sweep.dir={sweep}",
                     check=False, timeout=120)
    _assert_refused(result, says)
    assert _files(tmp_path) == before  # no trial ran, and the file was not given optuna's tables


@pytest.mark.parametrize("override", [
    "optimizer.lr=tag(log,interval(0,0.01))",  # a log range from 0
    "optimizer.lr=tag(log,interval(-1e-3,0.01))",
    "optimizer.lr=interval(0.01,0.001)",  # low above high
    "dataset.batch_size=tag(log,interval(0,32))",
])
def test_a_range_optuna_cannot_search_is_refused_before_the_study_is_made(run_cli, tmp_path, override):
    sweep = tmp_path / "sweep"
    result = run_cli("train.py", "-m", "hparams_search=optuna", "experiment=quickstart", override,
                     f"hydra.sweep.dir={sweep}", check=False, timeout=120)
    key, value = override.split("=", 1)
    _assert_refused(result, f"{key}: {value} is not a range Optuna can search (")
    assert not sweep.exists()


def test_a_study_the_search_can_resume_is_accepted_and_left_as_it_was(tmp_path):
    study = optuna.create_study(study_name=STUDY, storage=study_storage(str(tmp_path)), direction="maximize")
    study.tell(study.ask(), 0.5)
    before = _files(tmp_path)
    search.check_study(str(tmp_path), STUDY)
    search.check_study(str(tmp_path / "new"), STUDY)  # no study yet: a new search
    assert _files(tmp_path) == before and not (tmp_path / "new").exists()


# A cheap search: one epoch on 60 images; lr searched; weighted_ce trials are refused next to the weighted
# sampler (corrects the imbalance twice), so they fail at once. Sampler seed 3 draws ce, weighted_ce for the
# first invocation's two trials and ce for the resumed invocation's one.
TINY = ["hparams_search=optuna", "experiment=quickstart", "dataset.synthetic_n=60", "trainer.max_epochs=1",
        "dataset.num_workers=0", "dataset.batch_size=16", "loss=choice(ce,weighted_ce)", "balance=sampler",
        "hydra.sweeper.sampler.seed=3"]


def _snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def searched(run_cli, tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    """A search of 2 trials, resumed by the same command for 1 more; returns the sweep folder and a
    snapshot of the first invocation's job folders."""
    sweep = tmp_path_factory.mktemp("search") / "sweep"
    run_cli("train.py", "-m", *TINY, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}")
    first = {job: _snapshot(sweep / job) for job in ("0", "1")}
    run_cli("train.py", "-m", *TINY, "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={sweep}")
    return sweep, first


def _trials(sweep: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=STUDY, storage=study_storage(str(sweep))).trials


@pytest.mark.slow
def test_a_resumed_search_adds_trials_in_new_folders(searched):
    sweep, first = searched
    trials = _trials(sweep)
    assert [t.number for t in trials] == [0, 1, 2]
    jobs = sorted(p.parent.name for p in sweep.glob("*/.hydra"))
    assert jobs == ["0", "1", "2"] and [t.params[FOLDER_PARAM] for t in trials] == [0, 1, 2]
    for job, files in first.items():
        assert _snapshot(sweep / job) == files, f"job folder {job} was changed by the resumed search"
    for trial in trials:
        overrides = OmegaConf.load(sweep / str(trial.number) / ".hydra" / "overrides.yaml")
        assert f"optimizer.lr={trial.params['optimizer.lr']}" in overrides
        assert f"loss={trial.params['loss']}" in overrides
    assert trials[2].params["optimizer.lr"] not in {t.params["optimizer.lr"] for t in trials[:2]}


@pytest.mark.slow
def test_a_failed_trial_is_recorded_and_never_best(searched):
    sweep, _ = searched
    trials = _trials(sweep)
    assert {t.params["loss"] for t in trials} == {"ce", "weighted_ce"}  # the seed gives both kinds
    for trial in trials:
        failed = trial.params["loss"] == "weighted_ce"
        assert trial.state == (TrialState.FAIL if failed else TrialState.COMPLETE)
        assert (trial.value is None) is failed
        error = sweep / str(trial.number) / "error.txt"
        assert error.is_file() is failed
        if failed:
            assert error.read_text().startswith("balance.sampler: a weighted sampler together with class weights")
    best = optuna.load_study(study_name=STUDY, storage=study_storage(str(sweep))).best_trial
    assert best.state == TrialState.COMPLETE and best.params["loss"] == "ce"


@pytest.mark.slow
def test_best_value_is_the_best_trials_logged_validation_bacc(searched):
    sweep, _ = searched
    study = optuna.load_study(study_name=STUDY, storage=study_storage(str(sweep)))
    results = OmegaConf.to_container(OmegaConf.load(sweep / "optimization_results.yaml"))
    assert results["best_value"] == study.best_value and results["best_params"] == study.best_trial.params
    validation = {t.number: json.loads((sweep / str(t.number) / "val_metrics.json").read_text())
                  for t in study.trials if t.state == TrialState.COMPLETE}
    assert {n: v["bacc"] for n, v in validation.items()} == {t.number: t.value for t in study.trials
                                                           if t.state == TrialState.COMPLETE}
    assert study.best_value == max(v["bacc"] for v in validation.values())
    best = validation[study.best_trial.number]
    assert best["bacc"] == study.best_value and math.isfinite(best["bacc"])
    logged = pd.read_csv(sweep / str(study.best_trial.number) / "logs" / "metrics.csv").dropna(subset=["val/bacc"])
    assert logged.loc[logged["epoch"] == best["epoch"], "val/bacc"].max() == pytest.approx(best["bacc"], abs=1e-7)
    assert logged["val/bacc"].max() == pytest.approx(best["bacc"], abs=1e-7)


@pytest.mark.slow
def test_summary_lists_the_trials_and_names_the_best(searched, run_cli, tmp_path):
    sweep, _ = searched
    best = optuna.load_study(study_name=STUDY, storage=study_storage(str(sweep))).best_trial
    result = run_cli("lesion.summary", str(sweep), "--out", str(tmp_path))
    table = pd.read_csv(tmp_path / "summary.csv", dtype=str, keep_default_na=False)
    assert sorted(table["trial"]) == ["0", "1", "2"] and table["trial"].tolist() == table["run_dir"].tolist()
    assert table.loc[0, "trial"] == str(best.number) and table.loc[0, "status"] == "ok"
    failed = table[table["status"] != "ok"]
    assert len(failed) == 1 and failed["status"].iloc[0].startswith("balance.sampler: ")
    line = (tmp_path / "summary.md").read_text().splitlines()[-1]
    assert line == (f"Optuna study '{STUDY}': 3 trials (2 complete, 1 failed); best trial {best.number} "
                    f"(run_dir {best.number}): val BACC {best.value:.3f} — "
                    + " ".join(f"{k}={v}" for k, v in best.params.items() if k != FOLDER_PARAM))
    assert line in result.stdout.splitlines()
