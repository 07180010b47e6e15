"""The G-series experiment files compose to the recipes of the DESIGN table, and training one of
each family moves exactly the backbone stages the recipe trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

from lesion.train.run import compose_classifier

REPO = Path(__file__).resolve().parents[1]

G1_LOSSES = ["ce"] * 6 + ["focal"] * 6 + ["weighted_ce"] * 6
G1_BATCH = [8, 8, 16, 16, 32, 32] * 3
G1_LR = [1e-4, 1e-5] * 9

# id → (dataset, model, loss, downsample class, downsample to, augment target, class weight, sampler, smote)
EXPECTED = {
    **{f"g1_{k}": ("isic2017", "baseline", G1_LOSSES[k - 1], None, None, 0.5, None, False, False) for k in range(1, 19)},
    "g3_1": ("isic2017", "baseline", "ce", None, None, 0.5, None, False, False),
    "g3_2": ("isic2017", "baseline", "ce", "NV", None, None, None, False, False),
    "g3_3": ("isic2017", "baseline", "ce", None, None, None, None, False, True),
    "g6_1": ("isic2018", "barata", "ce", "NV", None, None, None, False, False),
    "g6_2": ("isic2018", "barata", "ce", "NV", None, 0.5, None, False, False),
    "g8_1": ("isic2018", "barata", "ce", None, None, None, "inverse_frequency", False, False),
    "g8_2": ("isic2018", "barata", "ce", None, None, None, None, True, False),
    "g9_1": ("isic2018", "barata", "ce", "NV", None, None, None, False, True),
    "g9_2": ("isic2018", "barata", "ce", "NV", "MEL", None, None, False, True),
    "g9_3": ("isic2018", "barata", "ce", "NV", None, 0.5, None, False, True),
}


def test_every_experiment_file_is_checked():
    files = {p.stem for p in (REPO / "conf" / "experiment").glob("g*.yaml")}
    assert files == set(EXPECTED) and len(files) == 28


@pytest.mark.parametrize("experiment", sorted(EXPECTED))
def test_experiment_composes_to_its_recipe(experiment):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    choices = cfg.hydra.runtime.choices
    dataset, model, loss, down_class, down_to, augment, weight, sampler, smote = EXPECTED[experiment]
    assert (choices.dataset, choices.model, choices.loss) == (dataset, model, loss)
    assert cfg.dataset.layout == dataset
    assert cfg.model.backbone == "resnet50" and cfg.dataset.image_size == 224
    balance = cfg.balance
    assert balance.downsample["class"] == down_class and balance.downsample.to == down_to
    assert balance.downsample.fraction == 0.5
    assert balance.augment.target == augment
    assert balance.class_weight == weight and balance.sampler is sampler
    assert balance.smote_tomek.enabled is smote
    if smote:
        assert balance.smote_tomek.finetune is True
    assert cfg.name == experiment.upper().replace("_", ".")
    first_line = (REPO / "conf" / "experiment" / f"{experiment}.yaml").read_text().splitlines()[1]
    assert first_line == f"# python train.py experiment={experiment}"
    if experiment.startswith("g1_"):
        k = int(experiment.split("_")[1])
        assert (cfg.dataset.batch_size, cfg.optimizer.lr) == (G1_BATCH[k - 1], G1_LR[k - 1])
        assert cfg.model.frozen_stages == 4
    if experiment.startswith("g3_"):
        assert (cfg.dataset.batch_size, cfg.optimizer.lr, cfg.model.frozen_stages) == (8, 1e-4, 3)


# Top-level parts of the net: the backbone's children as torchvision names them, and the head.
PARTS = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "head")
# One experiment per freezing recipe → (its synthetic dataset, model.frozen_stages, the parts that train).
TRAINED = {
    "g1_1": ("synthetic2017", 4, {"layer4", "head"}),
    "g3_1": ("synthetic2017", 3, {"layer3", "layer4", "head"}),
    "g6_1": ("synthetic2018", 0, set(PARTS)),
}
STEPS = 2
TINY = ["model.weights=none", "model.backbone=resnet18", "dataset.image_size=32", "dataset.batch_size=4",
        "dataset.num_workers=0", "dataset.synthetic_n=30", "trainer=cpu", "trainer.max_epochs=1",
        f"trainer.limit_train_batches={STEPS}", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]


def _part(key: str) -> str:
    """``backbone.layer1.0.bn1.weight`` → ``layer1``, ``head.fc.weight`` → ``head``."""
    names = key.split(".")
    return names[1] if names[0] == "backbone" else names[0]


@pytest.mark.slow
@pytest.mark.parametrize("experiment", sorted(TRAINED))
def test_training_moves_exactly_the_unfrozen_stages(experiment, run_cli, tmp_path):
    dataset, frozen_stages, trained = TRAINED[experiment]
    overrides = [f"experiment={experiment}", f"dataset={dataset}", *TINY]
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    assert cfg.model.frozen_stages == frozen_stages
    pl.seed_everything(cfg.seed, workers=True)  # train.py seeds, then builds the net before anything else
    net = compose_classifier(REPO / "conf", overrides).net
    initial = net.state_dict()
    run_cli("train.py", *overrides, f"hydra.run.dir={tmp_path}")
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    final = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    assert final.keys() == initial.keys() and {_part(k) for k in initial} == set(PARTS)

    moved = {k for k in initial if not torch.equal(initial[k], final[k])}
    expected = {k for k in initial if _part(k) in trained}
    assert sorted(moved - expected) == [], "frozen weights or BatchNorm statistics changed"
    assert sorted(expected - moved) == [], "trained weights or BatchNorm statistics did not change"
    counts = {k: int(v) for k, v in final.items() if k.endswith("num_batches_tracked")}
    assert counts == {k: STEPS if _part(k) in trained else 0 for k in counts}
    # Two AdamW steps of lr 1e-4 move a weight by about 2e-4; a different initialisation by about 0.1:
    # the rebuilt net is the one train.py started from.
    assert max(float((final[k] - initial[k]).abs().max()) for k, _ in net.named_parameters()) < 1e-2
