"""Training metrics of the hierarchical decoder: the loss is teacher-forced, ``train/*`` is of what the net predicts."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lesion.data.layouts import ISIC2018
from lesion.metrics import LesionMetrics
from lesion.train.module import LesionClassifier

CLASSES = list(ISIC2018.classes)


def hierarchical_classifier(seed: int) -> LesionClassifier:
    """A hierarchical Barata net that does not learn (lr 0) and has no dropout, so a training step's
    predictions can be recomputed; its label embeddings and last classifier are scaled up so that
    the token fed back (the target's, or the net's own guess) decides more of the last step."""
    torch.manual_seed(seed)
    module = LesionClassifier(
        model={"name": "barata", "backbone": "resnet18", "weights": "none", "hierarchical": True, "dropout": 0.0,
               "hidden_size": 16, "embed_dim": 8},
        loss={"name": "ce", "weight": None}, optimizer={"name": "sgd", "lr": 0.0}, scheduler=None,
        classes=CLASSES, taxonomy=ISIC2018.taxonomy(), image_size=32)
    with torch.no_grad():
        module.net.head.decoder.embed.weight.mul_(30)
        module.net.head.decoder.heads[-1].weight.mul_(10)
    return module


@pytest.mark.parametrize("inputs", ["images", "embeddings"])
@pytest.mark.parametrize("seed", [0, 1])
def test_training_metrics_are_those_of_the_greedy_predictions(inputs, seed):
    module = hierarchical_classifier(seed)
    images, labels = torch.randn(16, 3, 32, 32), torch.arange(16) % len(CLASSES)
    module.train()  # BatchNorm on the batch's statistics, as in the training step
    with torch.no_grad():
        embedded = module.net.embed(images)
        greedy = module.net.step_logits_from_pooled(*embedded)[-1].softmax(1)
        forced = module.net.step_logits_from_pooled(*embedded, labels)[-1].softmax(1)
    assert not torch.equal(greedy.argmax(1), forced.argmax(1))  # teacher forcing changes some predictions
    batch = (images, labels) if inputs == "images" else (*embedded, labels)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, DataLoader(TensorDataset(*batch), batch_size=len(labels)))

    expected = LesionMetrics(CLASSES)
    expected.update(greedy, labels)
    expected = expected.compute()
    assert module.results["train"]["confusion"] == expected["confusion"]
    assert float(trainer.callback_metrics["train/bacc"]) == pytest.approx(expected["bacc"], abs=1e-6)
    assert float(trainer.callback_metrics["train/auc_macro"]) == pytest.approx(expected["auc_macro"], abs=1e-4)
