"""EMA of the weights (callbacks=ema): checkpoints hold the running average, testing from a checkpoint uses
it, a resumed run continues it, and the SMOTE-Tomek head stage trains with it; integer state is never averaged."""

from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lesion.data.datamodule import IsicDataModule
from lesion.data.layouts import LAYOUTS
from lesion.models.decoder import LSTMDecoder
from lesion.train.callbacks import EMA
from lesion.train.module import LesionClassifier

DECAY = 0.5
TINY = ["trainer=cpu", "model.backbone=resnet18", "model.weights=none", "dataset.image_size=32",
        "dataset.batch_size=4", "dataset.num_workers=0"]


def model(loss: dict | None = None) -> LesionClassifier:
    torch.manual_seed(0)
    return LesionClassifier(
        model={"name": "baseline", "backbone": "resnet18", "weights": "none", "dropout": 0.0, "frozen_stages": 0},
        loss=loss or {"name": "ce", "weight": None}, optimizer={"name": "adam", "lr": 1e-2, "weight_decay": 0.0},
        scheduler=None, classes=list(LAYOUTS["isic2018"].classes), taxonomy=LAYOUTS["isic2018"].taxonomy(),
        image_size=32)


class StepWeights(Callback):
    """The parameters after every optimizer step, and what the module holds when a fit starts."""

    def __init__(self):
        self.steps: list[dict[str, torch.Tensor]] = []
        self.at_start: dict[str, torch.Tensor] | None = None

    def on_train_start(self, trainer, pl_module):
        self.at_start = {k: v.detach().clone() for k, v in pl_module.named_parameters()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append({k: v.detach().clone() for k, v in pl_module.named_parameters()})


def fit(root, folder, epochs: int, resume=None,
        loss: dict | None = None) -> tuple[pl.Trainer, LesionClassifier, StepWeights, ModelCheckpoint]:
    data = IsicDataModule("isic2018", str(root), image_size=32, batch_size=4, num_workers=0)
    module, steps = model(loss), StepWeights()
    checkpoints = ModelCheckpoint(dirpath=folder, filename="best", monitor="val/bacc", mode="max", save_last=True)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         max_epochs=epochs, limit_train_batches=3, limit_val_batches=2,
                         callbacks=[EMA(decay=DECAY), steps, checkpoints])
    trainer.fit(module, datamodule=data, ckpt_path=resume, weights_only=True)
    return trainer, module, steps, checkpoints


def running_average(steps: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The EMA by its definition: the first step's weights, then ``DECAY·average + (1 − DECAY)·weights``."""
    average = dict(steps[0])
    for weights in steps[1:]:
        average = {k: DECAY * average[k] + (1 - DECAY) * weights[k] for k in average}
    return average


def test_checkpoints_hold_the_running_average_and_testing_uses_it(synthetic_root, tmp_path):
    trainer, module, steps, checkpoints = fit(synthetic_root("isic2018"), tmp_path, epochs=2)
    assert len(steps.steps) == 6
    last = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    taken = steps.steps[:last["global_step"]]  # the steps before the checkpoint was written
    assert len(taken) >= 3
    expected = running_average(taken)
    for name, value in expected.items():
        assert torch.allclose(last["state_dict"][name], value, atol=1e-6), name
        assert torch.equal(last["current_model_state"][name], taken[-1][name]), name
    assert not all(torch.equal(expected[k], taken[-1][k]) for k in expected)  # the average is not the last step

    best = torch.load(checkpoints.best_model_path, map_location="cpu", weights_only=True)
    trainer.test(module, datamodule=trainer.datamodule, ckpt_path=checkpoints.best_model_path, weights_only=True)
    for name, value in module.state_dict().items():
        assert torch.equal(value, best["state_dict"][name]), name  # the averaged weights, not the training ones
    loaded = LesionClassifier.load_from_checkpoint(checkpoints.best_model_path)
    assert all(torch.equal(v, best["state_dict"][k]) for k, v in loaded.state_dict().items())


def test_a_resumed_fit_continues_the_average_and_the_training_weights(synthetic_root, tmp_path):
    root = synthetic_root("isic2018")
    fit(root, tmp_path / "first", epochs=1)
    saved = torch.load(tmp_path / "first" / "last.ckpt", map_location="cpu", weights_only=True)
    trainer, module, steps, _ = fit(root, tmp_path / "second", epochs=2, resume=tmp_path / "first" / "last.ckpt")
    for name, value in steps.at_start.items():  # training resumes from the training weights …
        assert torch.equal(value, saved["current_model_state"][name]), name
    ema = next(c for c in trainer.callbacks if isinstance(c, EMA))
    # … and the average continues from the saved one: DECAY·saved + (1 − DECAY)·w for the first new step, …
    expected = {k: DECAY * saved["state_dict"][k] + (1 - DECAY) * steps.steps[0][k] for k in steps.steps[0]}
    for weights in steps.steps[1:]:
        expected = {k: DECAY * expected[k] + (1 - DECAY) * weights[k] for k in expected}
    averaged = dict(ema._average_model.module.named_parameters())
    assert all(torch.allclose(averaged[k], v, atol=1e-6) for k, v in expected.items())


@pytest.mark.parametrize("loss", [{"name": "weighted_ce", "weight": "inverse_frequency"},
                                  {"name": "focal", "gamma": 2.0, "alpha": "inverse_frequency"}])
def test_class_weights_resolved_in_setup_are_in_the_average_and_resume(synthetic_root, tmp_path, loss):
    """The module resolves its loss's class weights in ``setup``, which Lightning runs after the
    callbacks': the average, copied from the module, must hold them too."""
    root = synthetic_root("isic2018")
    trainer, module, _, checkpoints = fit(root, tmp_path / "first", epochs=1, loss=loss)
    weights = {k: v for k, v in module.state_dict().items() if k.startswith("loss_fn.")}
    assert weights  # the resolved weights are state of the module
    best = torch.load(checkpoints.best_model_path, map_location="cpu", weights_only=True)
    assert all(torch.equal(best["state_dict"][k], v) for k, v in weights.items())
    trainer.test(module, datamodule=trainer.datamodule, ckpt_path=checkpoints.best_model_path, weights_only=True)
    fit(root, tmp_path / "second", epochs=2, resume=tmp_path / "first" / "last.ckpt", loss=loss)


SMOTE_AFTER_FINETUNING = ("balance=smote_tomek", "balance.smote_tomek.finetune=true",
                          "balance.smote_tomek.head_epochs=2")


@pytest.mark.slow
@pytest.mark.parametrize(("model", "balance", "decay"), [
    (("model=baseline",), SMOTE_AFTER_FINETUNING, 0.9),
    (("model=barata", "model.hierarchical=true"), (), 0.9),
    (("model=barata", "model.hierarchical=true"), SMOTE_AFTER_FINETUNING, 0.96),
    (("model=barata", "model.hierarchical=false"), SMOTE_AFTER_FINETUNING, 0.992),
], ids=["baseline-smote-0.9", "hierarchical-0.9", "hierarchical-smote-0.96", "flat-smote-0.992"])
def test_the_run_tests_what_evaluation_of_its_checkpoint_gives(run_cli, tmp_path, model, balance, decay):
    """train.py tests the very net that evaluate.py rebuilds from ``best.ckpt``: the average holds the
    decoder's taxonomy tables unchanged, through fine-tuning and the SMOTE-Tomek head stage."""
    run_dir = tmp_path / "run"
    run_cli("train.py", "dataset=synthetic2018", "dataset.synthetic_n=21", *model, *balance, "callbacks=ema",
            f"callbacks.ema.decay={decay}", "trainer.max_epochs=1", *TINY, f"hydra.run.dir={run_dir}")
    for stage in ("finetune", ".") if balance else (".",):  # last.ckpt holds the training weights beside the average
        folder = run_dir / "checkpoints" / stage
        assert "current_model_state" in torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
        assert "current_model_state" not in torch.load(folder / "best.ckpt", map_location="cpu", weights_only=True)
    trained = json.loads((run_dir / "test_metrics.json").read_text())
    out = tmp_path / "evaluation"
    run_cli("evaluate.py", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}", f"out={out}", "gradcam.n=0",
            "num_workers=0", "bootstrap=10", "plots=false")
    evaluated = json.loads((out / "metrics.json").read_text())
    assert evaluated["confusion"] == trained["confusion"]
    assert evaluated["bacc"] == pytest.approx(trained["bacc"], abs=1e-9)
    assert evaluated["auc_macro"] == pytest.approx(trained["auc_macro"], abs=1e-6, nan_ok=True)


class Tables(pl.LightningModule):
    """Float state (weights, BatchNorm statistics) and integer state (BatchNorm's step counter, the
    hierarchical decoder's taxonomy tables), trained on random pooled features."""

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm1d(8)
        self.decoder = LSTMDecoder(8, LAYOUTS["isic2018"].taxonomy(), hidden_size=8, embed_dim=4, dropout=0.0)

    def training_step(self, batch, batch_idx):
        x, y = batch
        avg = self.norm(x)
        steps = self.decoder.steps_from_pooled(avg, avg, y)
        return sum(F.cross_entropy(s, t) for s, t in zip(steps, self.decoder.step_targets(y)))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class StepBuffers(Callback):
    """The module's buffers after every optimizer step."""

    def __init__(self):
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append({k: v.detach().clone() for k, v in pl_module.named_buffers()})


@settings(max_examples=12, deadline=None)
@given(decay=st.one_of(st.sampled_from([0.9, 0.95, 0.96, 0.992, 0.997, 0.999, 0.9995]),
                       st.floats(0.5, 0.99999)),
       steps=st.integers(2, 5))
def test_only_floating_point_state_is_averaged(decay, steps):
    torch.manual_seed(0)
    module, seen = Tables(), StepBuffers()
    tables = {k: v.clone() for k, v in module.decoder.named_buffers()}
    data = TensorDataset(torch.randn(4 * steps, 8), torch.randint(0, 7, (4 * steps,)))
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, max_epochs=1, callbacks=[EMA(decay=decay), seen])
    trainer.fit(module, DataLoader(data, batch_size=4))
    # After the fit the module holds the average: its integer state is the module's own, …
    for name, table in tables.items():
        assert torch.equal(getattr(module.decoder, name), table), name
    assert int(module.norm.num_batches_tracked) == steps
    # … its float buffers the running average: the first step's values, then decay·average + (1 − decay)·values.
    average = seen.steps[0]["norm.running_var"]
    for buffers in seen.steps[1:]:
        average = decay * average + (1 - decay) * buffers["norm.running_var"]
    assert torch.allclose(module.norm.running_var, average, atol=1e-6)
    assert not torch.allclose(module.norm.running_var, seen.steps[-1]["norm.running_var"])
