"""Balancing steps: exact counts on a known label vector, composition order, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lesion.balance.plan import (augment_plan, downsample, effective_number, inverse_frequency, plan_balance,
                                 sample_weights)
from lesion.errors import LesionError
REPO = Path(__file__).resolve().parents[1]

CLASSES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
# A small ISIC-2018-shaped training set: NV is the majority, DF the rarest.
COUNTS = [20, 100, 10, 8, 20, 2, 4]
LABELS = np.repeat(np.arange(7), COUNTS)


def balance_cfg(name: str, *overrides: str) -> dict:
    """The ``balance`` config group ``name`` as composed by Hydra."""
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"balance={name}", *overrides])
    return OmegaConf.to_container(cfg.balance, resolve=False)


def counts(indices: np.ndarray) -> list[int]:
    return np.bincount(LABELS[indices], minlength=7).tolist()


def test_none_keeps_everything():
    plan = plan_balance(LABELS, CLASSES, balance_cfg("none"), seed=0)
    assert plan.indices.tolist() == list(range(len(LABELS)))
    assert plan.class_weights is None and plan.sample_weights is None and plan.steps == []


def test_downsample_majority_to_half():
    plan = plan_balance(LABELS, CLASSES, balance_cfg("downsample"), seed=0)
    assert counts(plan.indices) == [20, 50, 10, 8, 20, 2, 4]
    assert len(set(plan.indices.tolist())) == len(plan.indices)  # no repeats
    assert plan.steps == [{"step": "downsample", "before": dict(zip(CLASSES, COUNTS)),
                           "after": dict(zip(CLASSES, [20, 50, 10, 8, 20, 2, 4]))}]


def test_downsample_majority_to_the_mel_size():
    plan = plan_balance(LABELS, CLASSES, balance_cfg("downsample", "balance.downsample.to=MEL"), seed=0)
    assert counts(plan.indices) == [20, 20, 10, 8, 20, 2, 4]


def test_augment_up_to_half_the_majority():
    plan = plan_balance(LABELS, CLASSES, balance_cfg("augment"), seed=0)
    assert counts(plan.indices) == [50, 100, 50, 50, 50, 50, 50]
    # originals first, each minority image repeated about equally often
    assert plan.indices[: len(LABELS)].tolist() == list(range(len(LABELS)))
    df = plan.indices[LABELS[plan.indices] == 5]
    assert sorted(np.bincount(df)[np.bincount(df) > 0].tolist()) == [25, 25]


def test_augment_to_an_absolute_count():
    assert np.bincount(LABELS[augment_plan(LABELS, 30, seed=0)]).tolist() == [30, 100, 30, 30, 30, 30, 30]


def test_hybrid_downsamples_then_augments_then_smote_flag():
    plan = plan_balance(LABELS, CLASSES, balance_cfg("hybrid"), seed=0)
    assert [s["step"] for s in plan.steps] == ["downsample", "augment"]
    assert counts(plan.indices) == [25, 50, 25, 25, 25, 25, 25]
    assert balance_cfg("hybrid")["smote_tomek"]["enabled"] is True


def test_class_weights_from_the_balanced_counts():
    plan = plan_balance(LABELS, CLASSES, balance_cfg("class_weight"), seed=0)
    total = sum(COUNTS)
    assert plan.class_weights == pytest.approx([total / (7 * n) for n in COUNTS])
    effective = plan_balance(LABELS, CLASSES, balance_cfg("class_weight", "balance.class_weight=effective_number"), 0)
    raw = [(1 - 0.999) / (1 - 0.999 ** n) for n in COUNTS]
    assert effective.class_weights == pytest.approx([7 * r / sum(raw) for r in raw])
    assert effective_number([5, 0, 5]) == pytest.approx([1.0, 0.0, 1.0])
    assert inverse_frequency([30, 0, 10]) == pytest.approx([40 / 60, 0.0, 40 / 20])


def test_sampler_draws_every_class_equally():
    plan = plan_balance(LABELS, CLASSES, balance_cfg("sampler"), seed=0)
    per_class = np.bincount(LABELS, weights=plan.sample_weights)
    assert per_class == pytest.approx(np.ones(7))
    assert sample_weights(np.array([0, 0, 1])).tolist() == [0.5, 0.5, 1.0]


def test_sampler_with_class_weights_is_refused():
    with pytest.raises(LesionError, match="twice"):
        plan_balance(LABELS, CLASSES, balance_cfg("sampler", "balance.class_weight=inverse_frequency"), seed=0)


def test_unknown_class_names_the_field():
    with pytest.raises(LesionError, match="balance.downsample.class"):
        plan_balance(LABELS, CLASSES, balance_cfg("downsample", "balance.downsample.class=SK"), seed=0)
    with pytest.raises(LesionError, match="balance.class_weight"):
        plan_balance(LABELS, CLASSES, balance_cfg("class_weight", "balance.class_weight=sqrt"), seed=0)


def test_downsample_is_seeded():
    a, b = downsample(LABELS, 1, 30, seed=0), downsample(LABELS, 1, 30, seed=1)
    assert np.array_equal(a, downsample(LABELS, 1, 30, seed=0)) and not np.array_equal(a, b)
