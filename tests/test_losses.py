"""Losses: focal against a hand-computed value, gamma=0 equals weighted CE, class weights."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lesion.errors import LesionError
from lesion.balance.plan import inverse_frequency, resolve_class_weights
from lesion.train.losses import FocalLoss, WeightedCrossEntropy


def test_focal_matches_hand_computed_value():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    target = torch.tensor([0, 1])
    alpha = [0.25, 0.5, 0.25]
    # p_y by hand: softmax([2,0,0])[0], softmax([0,1,3])[1]
    p0 = math.exp(2) / (math.exp(2) + 2)
    p1 = math.e / (1 + math.e + math.exp(3))
    terms = [alpha[0] * (1 - p0) ** 2 * -math.log(p0), alpha[1] * (1 - p1) ** 2 * -math.log(p1)]
    expected = sum(terms) / (alpha[0] + alpha[1])
    got = FocalLoss(gamma=2.0, alpha=alpha)(logits, target).item()
    assert got == pytest.approx(expected, rel=1e-6)
    unweighted = FocalLoss(gamma=2.0)(logits, target).item()
    assert unweighted == pytest.approx(((1 - p0) ** 2 * -math.log(p0) + (1 - p1) ** 2 * -math.log(p1)) / 2, rel=1e-6)


def test_focal_with_gamma_zero_equals_weighted_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(16, 7), torch.randint(0, 7, (16,))
    weight = [1.0, 0.2, 3.0, 2.0, 0.5, 8.0, 6.0]
    focal = FocalLoss(gamma=0.0, alpha=weight)(logits, target)
    reference = nn.CrossEntropyLoss(weight=torch.tensor(weight))(logits, target)
    assert focal.item() == pytest.approx(reference.item(), rel=1e-6)
    assert WeightedCrossEntropy(weight)(logits, target).item() == pytest.approx(reference.item(), rel=1e-6)


def test_focal_down_weights_easy_examples():
    easy, hard = torch.tensor([[5.0, 0.0]]), torch.tensor([[0.2, 0.0]])
    y = torch.tensor([0])
    ratio_focal = FocalLoss(2.0)(easy, y) / FocalLoss(2.0)(hard, y)
    ratio_ce = FocalLoss(0.0)(easy, y) / FocalLoss(0.0)(hard, y)
    assert ratio_focal < ratio_ce / 10


def test_inverse_frequency_weights():
    assert inverse_frequency([50, 25, 25]) == pytest.approx([2 / 3, 4 / 3, 4 / 3])
    # an empty class gets 0 (no targets of it exist), the others share N / (present · n_c)
    assert inverse_frequency([30, 0, 10]) == pytest.approx([40 / 60, 0.0, 40 / 20])


def test_resolve_class_weights():
    cfg = {"_target_": "lesion.losses.FocalLoss", "gamma": 2.0, "alpha": "inverse_frequency"}
    resolved = resolve_class_weights(cfg, [50, 25, 25])
    assert resolved["alpha"] == pytest.approx([2 / 3, 4 / 3, 4 / 3])
    assert cfg["alpha"] == "inverse_frequency"  # input untouched
    with pytest.raises(LesionError, match="loss.weight"):
        resolve_class_weights({"weight": "sqrt"}, [1, 2])
    with pytest.raises(LesionError, match="2 entries for 3 classes"):
        resolve_class_weights({"weight": [1.0, 2.0]}, [1, 2, 3])
    planned = resolve_class_weights({"weight": None}, [1, 2], class_weights=[2.0, 0.5])
    assert planned["weight"] == [2.0, 0.5]
    with pytest.raises(LesionError, match="balance.class_weight"):
        resolve_class_weights({"weight": "inverse_frequency"}, [1, 2], class_weights=[2.0, 0.5])
    with pytest.raises(LesionError, match="twice"):
        resolve_class_weights({"alpha": [1.0, 1.0], "gamma": 2.0}, [1, 2], sampler=True)
    assert resolve_class_weights({"weight": None}, [1, 2], sampler=True)["weight"] is None
