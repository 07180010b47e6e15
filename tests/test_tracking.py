"""Experiment tracking (``logger=mlflow|wandb|many``): read back with the trackers' own clients, offline."""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from lesion.errors import LesionError
from lesion.evaluate.summary import summarize
from lesion.options import check_train
from lesion.train.run import run
from lesion.train.tracking import MlflowRun, check_answers, wandb_credentials
from lesion.train.trainer import build_run_loggers

REPO = Path(__file__).resolve().parents[1]
TINY = ["experiment=quickstart", "trainer.max_epochs=2", "dataset.synthetic_n=60", "dataset.num_workers=0"]
TRACK = 'pip install "lesion[track]"'


def _client(store: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")


def _runs(client) -> list:
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def _val_bacc(csv: Path) -> pd.DataFrame:
    log = pd.read_csv(csv)
    return log[log["val/bacc"].notna()][["step", "val/bacc"]]


@pytest.mark.slow
def test_an_mlflow_run_holds_the_config_the_metrics_and_the_files(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    run_cli("train.py", *TINY, "logger=[csv,mlflow]", f"hydra.run.dir={run_dir}")
    client = _client(run_dir)
    (tracked,) = _runs(client)
    assert client.get_experiment(tracked.info.experiment_id).name == "lesion"
    assert tracked.info.status == "FINISHED" and tracked.info.run_name == "run"
    params = tracked.data.params
    assert params["optimizer.lr"] == "0.001" and params["model.backbone"] == "resnet18"
    assert params["trainer.max_epochs"] == "2" and params["seed"] == "42" and params["balance.name"] == "sampler"
    record = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    record.run_dir = str(run_dir)  # ${hydra:runtime.output_dir}, a Hydra runtime value
    composed = OmegaConf.to_container(record, resolve=True)
    assert params == {key: str(value) for key, value in pd.json_normalize(composed, sep=".").iloc[0].items()}
    history = client.get_metric_history(tracked.info.run_id, "val/bacc")
    csv = _val_bacc(run_dir / "logs" / "metrics.csv")
    assert len(history) == 2 == len(csv)
    assert [m.step for m in history] == csv["step"].tolist()
    assert [m.value for m in history] == pytest.approx(csv["val/bacc"].tolist(), abs=1e-6)
    top = {f.path for f in client.list_artifacts(tracked.info.run_id)}
    assert {"test_metrics.json", "val_metrics.json", "balance.json", "hydra"} <= top and "checkpoints" not in top
    assert {f.path for f in client.list_artifacts(tracked.info.run_id, "hydra")} == \
        {"hydra/config.yaml", "hydra/hydra.yaml", "hydra/overrides.yaml"}
    assert [(m.name, m.source_run_id) for m in client.search_logged_models([tracked.info.experiment_id])] == \
        [("model", tracked.info.run_id)]
    copy = client.download_artifacts(tracked.info.run_id, "test_metrics.json", str(tmp_path))
    assert json.loads(Path(copy).read_text()) == json.loads((run_dir / "test_metrics.json").read_text())
    assert (run_dir / "mlartifacts").is_dir()  # artifacts stay under the run, not in the working directory


@pytest.mark.slow
def test_both_smote_tomek_stages_log_into_one_mlflow_run(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    run_cli("train.py", *TINY, "trainer.max_epochs=1", "balance=smote_tomek", "balance.smote_tomek.finetune=true",
            "balance.smote_tomek.head_epochs=2", "logger=[csv,mlflow]", f"hydra.run.dir={run_dir}")
    client = _client(run_dir)
    (tracked,) = _runs(client)
    history = client.get_metric_history(tracked.info.run_id, "val/bacc")
    stages = pd.concat([_val_bacc(run_dir / "logs" / "metrics.csv"), _val_bacc(run_dir / "logs/head/metrics.csv")])
    assert len(history) == 1 + 2 == len(stages)
    assert [m.value for m in history] == pytest.approx(stages["val/bacc"].tolist(), abs=1e-6)
    steps = [m.step for m in history]
    assert steps == sorted(set(steps))  # the head stage continues after the fit stage's last step
    assert [(m.name, m.source_run_id) for m in client.search_logged_models([tracked.info.experiment_id])] == \
        [("model", tracked.info.run_id)]


@pytest.mark.slow
def test_a_sweep_is_one_mlflow_experiment_under_the_sweep_folder(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    run_cli("train.py", "-m", *TINY, "trainer.max_epochs=1", "seed=1,2", "logger=mlflow", f"hydra.sweep.dir={sweep}")
    assert not list(sweep.glob("*/mlflow.db"))
    client = _client(sweep)
    runs = _runs(client)
    assert len(runs) == 2 and {client.get_experiment(r.info.experiment_id).name for r in runs} == {"sweep"}
    assert sorted((r.info.run_name, r.data.params["seed"]) for r in runs) == [("0", "1"), ("1", "2")]
    assert sorted(r.data.tags["lesion.run_dir"] for r in runs) == [str(sweep / "0"), str(sweep / "1")]
    assert summarize(sweep)["run_dir"].tolist() == ["0, 1"]  # the artifact copies are not runs to lesion.summary


@pytest.mark.slow
def test_wandb_without_credentials_runs_offline_in_the_run_folder(run_cli, cli_env, monkeypatch, tmp_path):
    for key in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delitem(cli_env, key, raising=False)
    env = {"NETRC": str(tmp_path / "no-netrc"), "WANDB_BASE_URL": "http://127.0.0.1:9",  # unreachable if tried
           **{f"WANDB_{k}_DIR": str(tmp_path / k.lower()) for k in ("CONFIG", "CACHE", "DATA")}}
    run_dir = tmp_path / "run"
    run_cli("train.py", *TINY, "trainer.max_epochs=1", "logger=wandb", f"hydra.run.dir={run_dir}", env=env)
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert not list((run_dir / "wandb").glob("run-*"))
    (record,) = offline.glob("run-*.wandb")
    data = record.read_bytes()
    assert b"val/bacc" in data and b"optimizer" in data  # metrics and the composed config
    saved = offline / "files" / "test_metrics.json"
    assert json.loads(saved.read_text()) == json.loads((run_dir / "test_metrics.json").read_text())


def test_wandb_credentials_are_a_key_or_a_netrc_entry(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert not wandb_credentials()
    (tmp_path / "netrc").write_text("machine example.org login u password p\n")
    assert not wandb_credentials()
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password key\n")
    assert wandb_credentials()
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_API_KEY", "key")
    assert wandb_credentials()


def _config(overrides: list[str], run_dir: Path):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    OmegaConf.set_struct(cfg, False)
    cfg.run_dir = str(run_dir)
    return cfg


def test_a_tracker_without_its_package_stops_the_run_before_it_writes(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` meets when it is not installed
    run_dir = tmp_path / "run"
    with pytest.raises(LesionError) as refused:
        run(_config([*TINY, "logger=mlflow"], run_dir))
    assert str(refused.value) == ("logger.mlflow: needs mlflow, which cannot be imported "
                                  f"(import of mlflow halted; None in sys.modules) — {TRACK}")
    assert not run_dir.exists()


def test_check_train_refuses_many_without_wandb(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)
    refusal = rf"^logger\.wandb: needs wandb, which cannot be imported .* — {re.escape(TRACK)}$"
    with pytest.raises(LesionError, match=refusal):
        check_train(OmegaConf.to_container(_config(["logger=many"], tmp_path), resolve=True))
    check_train(OmegaConf.to_container(_config(["logger=mlflow"], tmp_path), resolve=True))


@pytest.mark.parametrize("logger", ["mlflow", "wandb"])
def test_a_bad_tracker_option_is_refused_when_the_loggers_are_built(tmp_path, logger):
    with pytest.raises(LesionError, match=rf"^logger\.{logger}: Lightning refuses these options \(.*'bogus'"):
        build_run_loggers(_config([f"logger={logger}", f"+logger.{logger}.bogus=1"], tmp_path))


def test_building_the_mlflow_logger_writes_nothing(tmp_path):
    (tracker,) = build_run_loggers(_config(["logger=[csv,mlflow]"], tmp_path))  # CSV: a stage logger
    assert isinstance(tracker, MlflowRun)
    assert not list(tmp_path.iterdir())  # the store opens on first use: a run refused now leaves none behind


def test_a_logger_whose_module_is_missing_names_it():
    cfg = OmegaConf.create({"logger": {"x": {"_target_": "no_such_tracker.Logger"}}})
    with pytest.raises(LesionError, match=r"^logger\.x: cannot be built \(No module named 'no_such_tracker'\) — "):
        build_run_loggers(cfg)


def _closed_port() -> int:
    """A local port nobody listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_tracking_server_stops_the_run_at_once(run_cli, tmp_path):
    uri = f"http://127.0.0.1:{_closed_port()}"
    run_dir = tmp_path / "run"
    start = time.monotonic()
    result = run_cli("train.py", *TINY, "logger=[csv,mlflow]", f"logger.mlflow.tracking_uri={uri}",
                     f"hydra.run.dir={run_dir}", check=False, timeout=120)
    assert time.monotonic() - start < 30  # a refusal, not minutes of retries (MLflow's own)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("lesion: error: ")]
    assert errors == [result.stderr.strip().splitlines()[-1]]
    assert errors[0].startswith(f"lesion: error: logger.mlflow.tracking_uri: {uri} does not answer (")
    assert not run_dir.exists()


class _Answering(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def answering_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answering)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _retried() -> frozenset[int]:
    from mlflow.utils.request_utils import _TRANSIENT_FAILURE_RESPONSE_CODES

    return _TRANSIENT_FAILURE_RESPONSE_CODES


@settings(max_examples=20, deadline=None)
@given(status=st.one_of(st.sampled_from([408, 429, 500, 502, 503, 504]), st.integers(200, 599)))
def test_a_tracking_server_that_answers_is_accepted_unless_mlflow_would_retry(answering_server, status):
    """Any answer is a server that is there; those MLflow's client retries for minutes are refused as well."""
    _Answering.status = status
    if status in _retried():
        with pytest.raises(LesionError, match=rf"does not answer \(HTTP Error {status}: "):
            check_answers("logger.mlflow.tracking_uri", answering_server)
    else:
        check_answers("logger.mlflow.tracking_uri", answering_server)


def test_a_closed_port_is_refused_in_seconds():
    uri = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(LesionError, match=rf"^logger\.mlflow\.tracking_uri: {re.escape(uri)} does not answer \("):
        check_answers("logger.mlflow.tracking_uri", uri)


def _tensorboard(log_dir: Path):
    """The run's TensorBoard events in ``log_dir``: (hparams of its session, its experiment's metric names,
    the values of the scalar ``hp_metric``)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(log_dir))
    events.Reload()
    data = [plugin_data_pb2.HParamsPluginData.FromString(content)
            for content in events.PluginTagToContent("hparams").values()]
    (start,) = [d.session_start_info for d in data if d.HasField("session_start_info")]
    (experiment,) = [d.experiment for d in data if d.HasField("experiment")]
    hparams = {key: getattr(value, value.WhichOneof("kind")) for key, value in start.hparams.items()}
    metrics = [info.name.tag for info in experiment.metric_infos]
    scores = [event.value for event in events.Scalars("hp_metric")]
    return hparams, metrics, scores


def test_tensorboard_hparams_are_the_composed_config_and_hp_metric_the_chosen_val_bacc(trained_run):
    """The HParams tab compares runs on what was configured (balancing included) and on the validation
    BACC of the checkpoint each run chose (its val_metrics.json), never a placeholder."""
    hparams, metrics, scores = _tensorboard(trained_run / "logs")
    record = OmegaConf.load(trained_run / ".hydra" / "config.yaml")
    record.run_dir = str(trained_run)  # ${hydra:runtime.output_dir}, a Hydra runtime value
    composed = pd.json_normalize(OmegaConf.to_container(record, resolve=True), sep=".").iloc[0].to_dict()
    assert {"seed", "trainer.max_epochs", "balance.name", "balance.sampler", "balance.downsample.class"} <= set(hparams)
    assert set(hparams) == set(composed)
    for key, value in composed.items():
        if isinstance(value, (bool, int, float)) and value is not None:
            assert hparams[key] == value, key
        else:
            assert isinstance(hparams[key], str), key
    assert hparams["trainer.max_epochs"] == 2 and hparams["balance.downsample.class"] == "null"
    assert metrics == ["hp_metric"]
    chosen = json.loads((trained_run / "val_metrics.json").read_text())["bacc"]
    assert scores == [pytest.approx(chosen, abs=1e-6)]
