"""A Lightning user's view of lesion: ``load_from_checkpoint`` with no arguments, ``trainer.predict``,
class weights resolved in ``setup`` from the DataModule's balance plan."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from lesion.balance.plan import inverse_frequency
from lesion.data.datamodule import IsicDataModule
from lesion.data.layouts import LAYOUTS
from lesion.errors import LesionError
from lesion.train.module import LesionClassifier

CLASSES = list(LAYOUTS["isic2018"].classes)


def quiet_trainer(**options) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, **options)


def test_load_from_checkpoint_and_trainer_predict_give_evaluates_predictions(trained_run, run_cli, tmp_path):
    best = trained_run / "checkpoints" / "best.ckpt"
    out = tmp_path / "eval"
    run_cli("evaluate.py", f"ckpt={best}", "split=test", f"out={out}", "gradcam.n=0", "plots=false")
    expected = pd.read_csv(out / "predictions.csv")

    model = LesionClassifier.load_from_checkpoint(best)
    assert not model.training
    hp = model.hparams
    dataset = {k: v for k, v in hp.dataset.items() if k != "seed"}
    datamodule = IsicDataModule(**{**dataset, "num_workers": 0}, mean=hp.mean, std=hp.std, seed=hp.dataset["seed"])
    datamodule.setup("test")
    probs = torch.cat(quiet_trainer().predict(model, dataloaders=datamodule.test_dataloader())).numpy()

    assert datamodule.test_set.ids == expected["image"].tolist()
    assert probs.shape == (len(expected), len(CLASSES))
    assert np.abs(probs - expected[CLASSES].to_numpy()).max() <= 1e-6
    assert np.allclose(probs.sum(1), 1, atol=1e-6)


def test_load_from_checkpoint_checks_what_it_is_given(trained_run):
    best = trained_run / "checkpoints" / "best.ckpt"
    model = LesionClassifier.load_from_checkpoint(best)
    with pytest.raises(LesionError, match="model.name: 'timm' is not one of"):
        LesionClassifier.load_from_checkpoint(best, model={**model.hparams.model, "name": "timm"})
    with pytest.raises(LesionError, match="net: is not a hyper-parameter"):
        LesionClassifier.load_from_checkpoint(best, net=torch.nn.Identity())
    with pytest.raises(LesionError, match="hparams_file: is not used"):
        LesionClassifier.load_from_checkpoint(best, hparams_file="hparams.yaml")
    smaller = LesionClassifier.load_from_checkpoint(best, image_size=64)
    assert smaller.hparams.image_size == 64


def small_model(loss: dict) -> LesionClassifier:
    return LesionClassifier(
        model={"name": "baseline", "backbone": "resnet18", "weights": "none", "dropout": 0.0, "frozen_stages": 0},
        loss=loss, optimizer={"name": "adam", "lr": 1e-3, "weight_decay": 0.0}, scheduler=None, classes=CLASSES,
        taxonomy=LAYOUTS["isic2018"].taxonomy(), image_size=32)


def balanced_datamodule(root, balance: dict | None) -> IsicDataModule:
    datamodule = IsicDataModule("isic2018", str(root), image_size=32, batch_size=4, num_workers=0, balance=balance)
    datamodule.setup("fit")
    return datamodule


def test_the_datamodule_balances_its_training_split_only(synthetic_root):
    root = synthetic_root("isic2018")
    plain = balanced_datamodule(root, None)
    down = balanced_datamodule(root, {"downsample": {"class": "NV", "fraction": 0.5}})
    (step,) = down.plan.steps
    assert step["step"] == "downsample" and step["before"] == plain.class_counts(plain.train_set)
    assert step["after"]["NV"] == round(step["before"]["NV"] / 2)
    assert step["after"] == down.class_counts(down.train_set) and down.plan.counts == list(step["after"].values())
    assert down.val_set.ids == plain.val_set.ids and down.test_set.ids == plain.test_set.ids
    assert plain.plan.steps == [] and plain.plan.counts == list(plain.class_counts(plain.train_set).values())


@pytest.mark.parametrize("loss, balance", [
    ({"name": "ce", "weight": "inverse_frequency"}, {"downsample": {"class": "NV", "fraction": 0.5}}),
    ({"name": "focal", "gamma": 2.0, "alpha": None}, {"class_weight": "inverse_frequency"}),
])
def test_setup_resolves_class_weights_from_the_datamodules_counts(synthetic_root, loss, balance):
    datamodule = balanced_datamodule(synthetic_root("isic2018"), balance)
    model = small_model(loss)
    quiet_trainer(fast_dev_run=True).fit(model, datamodule=datamodule)
    key = "weight" if "weight" in loss else "alpha"
    expected = inverse_frequency(datamodule.plan.counts)
    assert model.hparams.loss[key] == pytest.approx(expected)
    assert torch.allclose(getattr(model.loss_fn, key), torch.tensor(expected, dtype=torch.float32))


def test_a_weighting_name_without_a_balance_plan_is_refused_at_setup(synthetic_root):
    datamodule = balanced_datamodule(synthetic_root("isic2018"), None)
    with pytest.raises(LesionError, match="loss.weight: names the weighting 'inverse_frequency'"):
        quiet_trainer(fast_dev_run=True).fit(small_model({"name": "ce", "weight": "inverse_frequency"}),
                                             train_dataloaders=datamodule.train_dataloader())
