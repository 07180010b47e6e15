"""Experiment tracking: one training run sent to MLflow or Weights & Biases (the ``logger`` group),
and its TensorBoard HParams session.

A tracker logs the whole run, however many stages it has (``fit``, then the SMOTE-Tomek ``head``
stage): :mod:`lesion.train.trainer` builds it once and gives it to every stage's Trainer. Its
params are the composed config with dotted keys (``optimizer.lr``), its metrics those Lightning
logs each epoch, and :func:`finish_run` adds the run's files once it is tested.

TensorBoard logs each stage into its own folder; :func:`finish_run` gives the last stage's folder
its HParams session once the run has chosen its checkpoint: the composed config (dotted keys, as
MLflow's params) and ``hp_metric``, the validation BACC of the checkpoint tested. The TensorBoard
logger is configured without Lightning's placeholder ``hp_metric`` of -1 (``default_hp_metric: false``).

- MLflow (:func:`mlflow_logger`): a local SQLite store, ``<run dir>/mlflow.db`` with artifacts in
  ``<run dir>/mlartifacts/`` (in a ``-m`` sweep the sweep folder's, all runs in one experiment
  named after it). MLflow 3 refuses a plain ``mlruns/`` folder store unless told otherwise, so
  SQLite it is. ``mlflow ui --backend-store-uri sqlite:///<dir>/mlflow.db`` shows the runs. A
  tracking server (``http(s)://``) must answer before the run starts (:func:`check_answers`).
  The tested checkpoint becomes the run's MLflow model ``model`` (:func:`save_mlflow_model`).
- W&B (:func:`wandb_logger`): offline unless credentials are there (``WANDB_API_KEY``, or a netrc
  entry for the W&B host); the run lives in ``<run dir>/wandb/`` and ``wandb sync`` uploads it.

Caveats: a resumed run (``ckpt_path``) is a new tracker run; sweep jobs running at once (a
parallel launcher) take turns to open the SQLite store, then share it (SQLite serialises writes).
"""

from __future__ import annotations

import fcntl
import http.client
import importlib
import inspect
import json
import logging
import netrc
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory
from urllib.parse import urlparse

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from pytorch_lightning.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger
from pytorch_lightning.loggers.logger import Logger, rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from lesion.errors import LesionError
from lesion.hydra_record import dotted

log = logging.getLogger(__name__)

# The package that a tracker's ``_target_`` (by its last name) needs.
_PACKAGES = {"mlflow_logger": "mlflow", "MLFlowLogger": "mlflow", "wandb_logger": "wandb", "WandbLogger": "wandb"}
# The run's files that trackers keep (those that exist); MLflow also keeps the .hydra/ record.
RUN_FILES = ("test_metrics.json", "val_metrics.json", "balance.json")
# The name of a run's MLflow model: runs:/<run id>/model.
MODEL_NAME = "model"
# How long a tracking server may take to answer; MLflow itself retries a silent one for minutes.
ANSWER_TIMEOUT_S = 5.0
# The answers MLflow's client retries for minutes too (a proxy in front of a server that is down).
RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def check_installed(where: str, target: str) -> None:
    """Refuse, before any work, a tracker whose package cannot be imported.

    Args:
        where: the config entry (``logger.mlflow``).
        target: its ``_target_``.
    """
    package = _PACKAGES.get(target.rsplit(".", 1)[-1])
    if package is None:
        return
    try:
        importlib.import_module(package)
    except ImportError as error:
        problem = (str(error).splitlines() or [type(error).__name__])[0]
        raise LesionError(where, f"needs {package}, which cannot be imported ({problem})",
                          'pip install "lesion[track]"') from None


def check_answers(where: str, uri: str, timeout_s: float = ANSWER_TIMEOUT_S) -> None:
    """Refuse, before any work, a tracking server that does not answer a request for its ``/health``
    endpoint within ``timeout_s`` seconds.

    Refused: a closed port, an unknown host, a connection reset, silence, and the statuses MLflow
    would retry (:data:`RETRIED_STATUSES`). Any other answer comes from a server that is there (an
    error status or a TLS complaint included), and MLflow reports what is wrong with it.

    Args:
        where: the config entry (``logger.mlflow.tracking_uri``).
        uri: the server's ``http(s)://`` address.
        timeout_s: seconds to wait for the connection, and again for the answer.
    """
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s).close()
        return
    except urllib.error.HTTPError as error:
        cause = error if error.code in RETRIED_STATUSES else None
    except urllib.error.URLError as error:
        cause = error.reason
    except (OSError, http.client.HTTPException) as error:  # reset or silent once connected, or not HTTP
        cause = error
    if cause is None or isinstance(cause, ssl.SSLError):
        return
    reason = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
    raise LesionError(where, f"{uri} does not answer ({reason})",
                      "start the tracking server or correct the address (null: a local store in the run folder)")


@contextmanager
def _locked(folder: Path | None) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` itself (no lock file is left behind); ``None``: no lock."""
    if folder is None:
        yield
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock


def _sweep_dir() -> Path | None:
    """The sweep folder of a ``-m`` job, else ``None``."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir)
    return None


class MlflowRun(Logger):
    """One training run as one MLflow run: Lightning's ``MLFlowLogger``, opened on first use.

    Opening late means a run refused after its loggers were built leaves no store behind. The
    params are ``config`` (flattened, dotted keys) in place of the LightningModule's
    hyper-parameters, logged once; a stage whose Trainer counts steps from 0 again continues after
    the previous stage's last step, so each metric's history reads in order.

    Args:
        config: the composed config (a plain dict).
        log_checkpoint: :meth:`log_files` also logs the tested checkpoint as the run's MLflow model.
        store: the folder of a local store, locked while the run opens it (sweep jobs starting
            at once would otherwise race to create its tables and experiment).
        options: ``MLFlowLogger`` arguments (``tracking_uri``, ``experiment_name``, ``run_name`` …).
    """

    def __init__(self, config: dict | None = None, log_checkpoint: bool = True, store: Path | None = None,
                 **options):
        super().__init__()
        inspect.signature(MLFlowLogger).bind(**options)  # unknown options fail now, not at first use
        self._config = config or {}
        self.log_checkpoint = log_checkpoint
        self._store = store
        self._options = options
        self._logger: MLFlowLogger | None = None
        self._params_logged = False
        self._last_step = 0
        self._step_offset = 0

    @property
    def mlflow(self) -> MLFlowLogger:
        """The ``MLFlowLogger`` (the store is opened, and the run created, on first use)."""
        if self._logger is None:
            with _locked(self._store):
                logger = MLFlowLogger(**self._options)
                _ = logger.experiment  # creates the experiment (if new) and the run
            self._logger = logger
        return self._logger

    @property
    @rank_zero_experiment
    def experiment(self):
        """The ``MlflowClient``."""
        return self.mlflow.experiment

    @property
    def run_id(self) -> str | None:
        return self.mlflow.run_id if rank_zero_only.rank == 0 else None

    @property
    def name(self) -> str | None:
        return self.mlflow.name if rank_zero_only.rank == 0 else None

    @property
    def version(self) -> str | None:
        return self.mlflow.version if rank_zero_only.rank == 0 else None

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        if not self._params_logged:
            self.mlflow.log_hyperparams({key: str(value) for key, value in dotted(self._config).items()})
            self._params_logged = True

    @rank_zero_only
    def log_metrics(self, metrics, step: int | None = None) -> None:
        if (step or 0) + self._step_offset < self._last_step:  # a new stage's Trainer, counting from 0 again
            self._step_offset = self._last_step + 1
        step = (step or 0) + self._step_offset
        self._last_step = max(self._last_step, step)
        self.mlflow.log_metrics(metrics, step)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback) -> None:
        self.mlflow.after_save_checkpoint(checkpoint_callback)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._logger is not None:
            self._logger.finalize(status)

    @rank_zero_only
    def log_files(self, run_dir: Path, best: str | None) -> None:
        """Keep the run's files as artifacts: :data:`RUN_FILES` and the ``.hydra/`` record (as ``hydra/``,
        so that ``lesion.summary`` does not count the copy as a run); and the tested checkpoint ``best``
        as the run's MLflow model (:meth:`log_model`)."""
        client, run_id = self.experiment, self.run_id
        for name in RUN_FILES:
            if (run_dir / name).is_file():
                client.log_artifact(run_id, str(run_dir / name))
        if (run_dir / ".hydra").is_dir():
            client.log_artifacts(run_id, str(run_dir / ".hydra"), "hydra")
        if best and self.log_checkpoint:
            self.log_model(best)

    @rank_zero_only
    def log_model(self, checkpoint: str | Path) -> None:
        """Log ``checkpoint``'s net as the run's MLflow model :data:`MODEL_NAME` (:func:`save_mlflow_model`):
        ``mlflow.pytorch.load_model("runs:/<run id>/model")`` loads it."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.models import Model

        # MLflow's own log_model reads the tracking URI and experiment from process-wide state; the
        # client calls it makes, made here with this run's client, leave that state alone.
        client, run_id = self.experiment, self.run_id
        model = client.create_logged_model(client.get_run(run_id).info.experiment_id, name=MODEL_NAME,
                                           source_run_id=run_id)
        try:
            client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
            with TemporaryDirectory() as folder:
                save_mlflow_model(checkpoint, Path(folder) / MODEL_NAME,
                                  Model(artifact_path=model.artifact_location, run_id=run_id, model_id=model.model_id,
                                        model_uuid=model.model_id))
                client.log_model_artifacts(model.model_id, str(Path(folder) / MODEL_NAME))
        except Exception as error:  # noqa: BLE001 — the run is tested and its files are written: reported, not fatal
            client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
            log.warning("the MLflow model of %s could not be saved (%s: %s); the checkpoint is the run's model",
                        checkpoint, type(error).__name__, (str(error).splitlines() or [""])[0][:300])
            return
        client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)


def save_mlflow_model(checkpoint: str | Path, path: Path, mlflow_model=None) -> None:
    """Save a lesion checkpoint as an MLflow model in the folder ``path``: PyTorch flavour, and pyfunc for a net
    of images only.

    The model is the graph that ``export.py`` exports (:class:`~lesion.export.graph.ProbabilityGraph`):
    B×3×S×S normalised float32 images (and B×D encoded metadata for a net with a metadata branch) →
    B×K class probabilities, as the signature says, with any batch size. It is saved as a
    ``torch.export`` program (``pt2``): loading it runs no pickled code and needs torch, not lesion.
    The MLflow model's metadata is the preprocessing record (:mod:`lesion.export.preprocessing`):
    classes, input size, normalisation, colour constancy.

    Args:
        checkpoint: a checkpoint written by ``train.py``.
        path: the folder to create.
        mlflow_model: the ``mlflow.models.Model`` to fill in (its run and logged-model ids), or ``None``.
    """
    import mlflow.pytorch
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from lesion.export.run import exported_graph
    from lesion.train.module import LesionClassifier

    graph, record = exported_graph([LesionClassifier.load_from_checkpoint(checkpoint, "cpu")], [str(checkpoint)])
    inputs = tuple(t.numpy() for t in graph.example_inputs(record["input_size"]))
    # pyfunc, which MLflow adds for one input, turns a named input into a dict the PyTorch flavour refuses.
    names = record["inputs"] if len(inputs) > 1 else [None]
    signature = ModelSignature(
        Schema([TensorSpec(x.dtype, (-1, *x.shape[1:]), name) for x, name in zip(inputs, names)]),
        Schema([TensorSpec(np.dtype(np.float32), (-1, len(record["classes"])), record["output"])]))
    mlflow.pytorch.save_model(graph, str(path), mlflow_model=mlflow_model, signature=signature, input_example=inputs,
                              serialization_format="pt2", metadata=record,
                              pip_requirements=mlflow.pytorch.get_default_pip_requirements())


def mlflow_logger(run_dir: str, run_config: dict | None = None, tracking_uri: str | None = None,
                  experiment_name: str | None = None, run_name: str | None = None, log_checkpoint: bool = True,
                  **options) -> MlflowRun:
    """The run's MLflow logger (``_target_`` of ``conf/logger/mlflow.yaml``).

    Args:
        run_dir: the run directory.
        run_config: the composed config, logged as params (the run fills it in).
        tracking_uri: ``None``: the local store ``sqlite:///<dir>/mlflow.db``, ``<dir>`` being the
            sweep folder in a ``-m`` sweep, else ``run_dir``; artifacts then go to ``<dir>/mlartifacts/``.
            A server (``http(s)://``) must answer now (:func:`check_answers`).
        experiment_name: ``None``: the sweep folder's name in a sweep, else ``lesion``.
        run_name: ``None``: the run folder's name.
        log_checkpoint: log the tested checkpoint as the run's MLflow model (:meth:`MlflowRun.log_model`).
        options: more ``MLFlowLogger`` arguments (``tags``, ``artifact_location`` …).
    """
    sweep, store = _sweep_dir(), None
    if tracking_uri is None:
        store = Path(sweep or run_dir).resolve()
        tracking_uri = f"sqlite:///{store / 'mlflow.db'}"
        options.setdefault("artifact_location", (store / "mlartifacts").as_uri())
    elif urlparse(tracking_uri).scheme in ("http", "https"):
        check_answers("logger.mlflow.tracking_uri", tracking_uri)
    options.setdefault("tags", {"lesion.run_dir": str(Path(run_dir).resolve())})
    return MlflowRun(run_config, log_checkpoint, store, tracking_uri=tracking_uri,
                     experiment_name=experiment_name or (sweep.name if sweep else "lesion"),
                     run_name=run_name or Path(run_dir).name, **options)


def wandb_credentials() -> bool:
    """Whether W&B can log in without asking: ``WANDB_API_KEY``, or a netrc entry (``$NETRC``, else
    ``~/.netrc``) for the host of ``WANDB_BASE_URL`` (default ``api.wandb.ai``)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_logger(run_dir: str, run_config: dict | None = None, offline: bool | None = None, project: str = "lesion",
                 name: str | None = None, group: str | None = None, **options):
    """The run's W&B logger (``_target_`` of ``conf/logger/wandb.yaml``): a ``WandbLogger`` saving to ``run_dir``.

    Args:
        run_dir: the run directory (W&B writes ``<run_dir>/wandb/``).
        run_config: the composed config, the W&B run's config (the run fills it in).
        offline: ``None``: as ``WANDB_MODE`` says when set, else offline unless :func:`wandb_credentials`.
        project: the W&B project.
        name: ``None``: the run folder's name.
        group: ``None``: the sweep folder's name in a ``-m`` sweep.
        options: more ``WandbLogger`` or ``wandb.init`` arguments (``entity``, ``tags`` …).
    """
    import wandb

    own = inspect.signature(WandbLogger).parameters
    inspect.signature(wandb.init).bind(**{k: v for k, v in options.items() if k not in own})  # unknown options fail now
    if wandb.run is not None:  # left open by an earlier job of this process (a sweep) that failed
        wandb.finish(exit_code=1)
    sweep = _sweep_dir()
    if offline is None and not os.environ.get("WANDB_MODE"):
        offline = not wandb_credentials()
    if offline is not None:  # ``mode`` rather than WandbLogger's ``offline``, which sets WANDB_MODE for the process
        options.setdefault("mode", "offline" if offline else "online")
    return WandbLogger(save_dir=run_dir, project=project, name=name or Path(run_dir).name,
                       group=group or (sweep.name if sweep else None), config=run_config, **options)


def tensorboard_hparams(config: dict) -> dict[str, str | int | float | bool]:
    """The composed config as TensorBoard hyper-parameters: dotted keys (``balance.downsample.class``), each
    value a number, a bool or a string (``null``, lists and empty groups in JSON: ``[0.5, 0.5]``)."""
    return {key: value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
            for key, value in dotted(config).items()}


def finish_run(loggers: Iterable[Logger], run_dir: Path, best: str | None, config: dict, val_bacc: float) -> None:
    """Send the tested run's files to its trackers (W&B: :data:`RUN_FILES`, its config being the
    composed one) and end its W&B run, so that the next job of a sweep, in the same process, starts its own;
    give each TensorBoard log its HParams session (:func:`tensorboard_hparams` of ``config``, ``hp_metric`` =
    ``val_bacc``).

    Args:
        loggers: the last stage's loggers (others are left alone).
        run_dir: the run directory.
        best: the tested checkpoint, if any.
        config: the composed config, resolved.
        val_bacc: the validation BACC of the tested checkpoint (NaN when none was saved).
    """
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(tensorboard_hparams(config), {"hp_metric": val_bacc})
            logger.experiment.close()  # testing closed the event file; logging opened another
        elif isinstance(logger, MlflowRun):
            logger.log_files(Path(run_dir), best)
        elif isinstance(logger, WandbLogger):
            run = logger.experiment
            for name in RUN_FILES:
                if (Path(run_dir) / name).is_file():
                    run.save(str(Path(run_dir) / name), base_path=str(run_dir), policy="now")
            run.finish()
