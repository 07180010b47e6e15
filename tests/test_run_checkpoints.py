"""What a run keeps: ``best.ckpt`` holds the model (weights and hyper-parameters), ``last.ckpt`` the whole
training state, and MLflow gets the tested checkpoint as an MLflow model rather than a copy of the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

from lesion.data.datamodule import IsicDataModule
from lesion.data.metadata_features import MetadataEncoding
from lesion.export.graph import ProbabilityGraph
from lesion.train.module import VAL_BACC_KEY, LesionClassifier
from lesion.train.run import build_classifier
from lesion.train.tracking import save_mlflow_model
from lesion.train.trainer import build_callbacks

REPO = Path(__file__).resolve().parents[1]
# What resuming needs beyond the weights; none of it belongs in a model checkpoint.
TRAINING_STATE = {"optimizer_states", "lr_schedulers", "callbacks", "current_model_state", "averaging_state"}
QUICKSTART = ["experiment=quickstart", "dataset.synthetic_n=60", "dataset.num_workers=0"]
TINY = ["dataset=synthetic2018", "model.backbone=resnet18", "model.weights=none", "dataset.image_size=32"]


def file_size(path: Path) -> int:
    return path.stat().st_size


def weights_size(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def configured(folder: Path, overrides: list[str]) -> tuple[LesionClassifier, list[pl.Callback]]:
    """The classifier and the checkpoint callbacks (``conf/callbacks``) of a training stage of ``overrides``."""
    quiet = [f"callbacks.{name}=null" for name in ("early_stopping", "lr_monitor", "progress")]
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose("train", overrides=[*TINY, *overrides, *quiet])
    torch.manual_seed(0)
    return build_classifier(cfg), build_callbacks(cfg, folder)


@pytest.mark.parametrize("overrides", [
    ["model=baseline", "optimizer.lr=1e-2"],
    ["model=barata", "model.hierarchical=true", "optimizer.name=sgd", "+optimizer.momentum=0.9", "optimizer.lr=1e-2",
     "callbacks=ema", "callbacks.ema.decay=0.5"],
], ids=["baseline-adamw", "hierarchical-sgd-ema"])
def test_best_ckpt_is_the_validated_weights_and_last_ckpt_the_training_state(synthetic_root, tmp_path, overrides):
    """One epoch: best.ckpt and last.ckpt come from the same validation, so best.ckpt must hold last.ckpt's
    ``state_dict`` (with EMA the averaged weights that validation scored) and none of its training state."""
    module, callbacks = configured(tmp_path, overrides)
    data = IsicDataModule("isic2018", str(synthetic_root("isic2018")), image_size=32, batch_size=4, num_workers=0)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         max_epochs=1, limit_train_batches=3, limit_val_batches=2, callbacks=callbacks)
    trainer.fit(module, datamodule=data)
    best = torch.load(tmp_path / "best.ckpt", map_location="cpu", weights_only=True)
    last = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)

    assert TRAINING_STATE & set(best) == set()
    assert {"optimizer_states", "lr_schedulers", "callbacks"} <= set(last)  # resuming needs all of it
    assert best["hyper_parameters"] == last["hyper_parameters"] and best[VAL_BACC_KEY] == last[VAL_BACC_KEY]
    assert best["state_dict"].keys() == last["state_dict"].keys()
    assert all(torch.equal(best["state_dict"][k], v) for k, v in last["state_dict"].items())
    if "callbacks=ema" in overrides:  # the average, not the training weights
        assert not all(torch.equal(best["state_dict"][k], v) for k, v in last["current_model_state"].items())
    assert file_size(tmp_path / "best.ckpt") < weights_size(best["state_dict"]) * 1.01 + 64_000
    loaded = LesionClassifier.load_from_checkpoint(tmp_path / "best.ckpt")
    assert all(torch.equal(v, best["state_dict"][k]) for k, v in loaded.state_dict().items())


@pytest.fixture(scope="module")
def quickstart_run(run_cli, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("quickstart")
    run_cli("train.py", *QUICKSTART, "trainer.max_epochs=2", f"hydra.run.dir={run_dir}")
    return run_dir


def test_quickstart_best_ckpt_is_under_40_percent_of_last_ckpt(quickstart_run):
    best, last = quickstart_run / "checkpoints" / "best.ckpt", quickstart_run / "checkpoints" / "last.ckpt"
    assert file_size(best) < 0.4 * file_size(last), (file_size(best), file_size(last))
    contents = torch.load(best, map_location="cpu", weights_only=True)
    assert TRAINING_STATE & set(contents) == set()
    assert contents[VAL_BACC_KEY] == json.loads((quickstart_run / "val_metrics.json").read_text())["bacc"]


def test_evaluating_best_ckpt_gives_the_run_s_test_metrics(quickstart_run, run_cli, tmp_path):
    out = tmp_path / "eval"
    run_cli("evaluate.py", f"ckpt={quickstart_run / 'checkpoints' / 'best.ckpt'}", "split=test", f"out={out}",
            "gradcam.n=0", "plots=false", "bootstrap=10", "num_workers=0")
    tested = json.loads((quickstart_run / "test_metrics.json").read_text())
    evaluated = json.loads((out / "metrics.json").read_text())
    assert evaluated["confusion"] == tested["confusion"]
    assert evaluated["bacc"] == pytest.approx(tested["bacc"], abs=1e-9)
    assert evaluated["auc_macro"] == pytest.approx(tested["auc_macro"], abs=1e-6)


def test_resuming_from_best_ckpt_is_refused_and_points_to_last_ckpt(quickstart_run, run_cli, tmp_path):
    run_dir = shutil.copytree(quickstart_run, tmp_path / "run")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    result = run_cli("train.py", *QUICKSTART, "trainer.max_epochs=3",
                     f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}", f"hydra.run.dir={run_dir}", check=False)
    lines = [line for line in result.stderr.splitlines() if line.startswith("lesion: error:")]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1 and "ckpt_path=last" in lines[0] and "weights" in lines[0], lines
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("overrides", [
    ["model=barata", "model.hierarchical=false"],
    ["model=barata", "model.hierarchical=true"],
    ["model=baseline", "model.metadata=true"],
], ids=["flat", "hierarchical", "baseline-metadata"])
def test_an_mlflow_model_gives_its_checkpoint_s_probabilities_for_any_batch(tmp_path, overrides):
    pytest.importorskip("mlflow")
    import mlflow.pytorch

    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose("train", overrides=[*TINY, *overrides])
    ages, sexes, sites = pd.Series([30.0, 70.0]), ["male", "female"], ["torso", "head/neck"]
    encoding = MetadataEncoding.fit(pd.DataFrame({"age": ages, "sex": sexes, "site": sites}), ("torso", "head/neck"))
    torch.manual_seed(0)
    module = build_classifier(cfg, metadata=encoding.as_dict() if cfg.model.metadata else None)
    checkpoint = tmp_path / "best.ckpt"  # what read_checkpoint needs of a checkpoint
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, checkpoint)

    save_mlflow_model(checkpoint, tmp_path / "model")
    logged = mlflow.pytorch.load_model(str(tmp_path / "model"))
    info = mlflow.models.Model.load(str(tmp_path / "model"))
    graph = ProbabilityGraph([LesionClassifier.load_from_checkpoint(checkpoint).net]).eval()
    shapes = [(3, 32, 32), (encoding.width,)] if cfg.model.metadata else [(3, 32, 32)]
    assert [spec.shape[1:] for spec in info.signature.inputs.inputs] == shapes
    assert ("python_function" in info.flavors) == (len(shapes) == 1)  # MLflow's pyfunc takes one input
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 2, 7):
        inputs = [torch.randn(batch, *shape, generator=generator) for shape in shapes]
        with torch.no_grad():
            assert torch.allclose(logged(*inputs), graph(*inputs), atol=1e-6)


@pytest.mark.slow
def test_mlflow_gets_the_tested_checkpoint_as_a_pytorch_model_with_a_signature(run_cli, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    import mlflow.pytorch
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    run_cli("train.py", *QUICKSTART, "trainer.max_epochs=1", "logger=mlflow", f"hydra.run.dir={run_dir}")
    best = run_dir / "checkpoints" / "best.ckpt"
    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    (tracked,) = MlflowClient(uri).search_runs([e.experiment_id for e in MlflowClient(uri).search_experiments()])
    model_uri = f"runs:/{tracked.info.run_id}/model"
    assert not list((run_dir / "mlartifacts").rglob("*.ckpt"))  # no copy of the checkpoint file
    # One copy of the weights (and the run's small files), not the training state.
    assert sum(file_size(p) for p in (run_dir / "mlartifacts").rglob("*") if p.is_file()) < 1.05 * file_size(best)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # where runs:/ URIs are looked up
    info = mlflow.models.get_model_info(model_uri)
    logged = mlflow.pytorch.load_model(model_uri)
    module = LesionClassifier.load_from_checkpoint(best)
    classes = list(module.hparams.classes)
    assert {"pytorch", "python_function"} <= set(info.flavors)
    (image,), (probabilities,) = info.signature.inputs.inputs, info.signature.outputs.inputs
    assert (image.type, image.shape) == (np.dtype(np.float32), (-1, 3, 32, 32))
    assert probabilities.shape == (-1, len(classes))
    assert info.metadata["classes"] == classes and info.metadata["mean"] == list(module.hparams.mean)
    graph = ProbabilityGraph([module.net]).eval()
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 5):
        images = torch.randn(batch, 3, 32, 32, generator=generator)
        with torch.no_grad():
            assert torch.allclose(logged(images), graph(images), atol=1e-6)
