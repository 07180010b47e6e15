"""The G-series experiment files compose to the recipes of the DESIGN table."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

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
        assert (cfg.dataset.batch_size, cfg.optimizer.lr, cfg.model.frozen_stages) == (8, 1e-4, 2)
