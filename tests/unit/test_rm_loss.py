"""Bradley-Terry loss of reward-model training, against values computed by hand."""
from __future__ import annotations

import math

import pytest
import torch

from feedback_rl.losses import bradley_terry_loss


def nlsig(x: float) -> float:
    """-log sigmoid(x) = log(1 + e^-x), by hand."""
    return math.log(1 + math.exp(-x))


def test_bradley_terry_is_the_mean_negative_log_sigmoid_of_the_gap():
    chosen, rejected = torch.tensor([1.0, 0.5, -2.0]), torch.tensor([0.0, 1.5, -2.0])
    # gaps 1, -1, 0
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(1)) + math.log(2)) / 3
    assert float(bradley_terry_loss(chosen, rejected)) == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx((0.3132617 + 1.3132617 + 0.6931472) / 3, rel=1e-6)


def test_margin_asks_for_a_larger_gap():
    chosen, rejected = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 1.5])
    margins = torch.tensor([0.5, 2.0])
    expected = (nlsig(1.0 - 0.5) + nlsig(-1.0 - 2.0)) / 2
    assert float(bradley_terry_loss(chosen, rejected, margins)) == pytest.approx(expected, rel=1e-6)
    assert float(bradley_terry_loss(chosen, rejected, margins)) > float(bradley_terry_loss(chosen, rejected))


def test_gradient_pushes_chosen_up_and_rejected_down():
    chosen = torch.tensor([0.2], requires_grad=True)
    rejected = torch.tensor([0.7], requires_grad=True)
    bradley_terry_loss(chosen, rejected).backward()
    # d/dc -log sig(c - r) = -(1 - sig(c - r)) = -sig(r - c)
    s = 1 / (1 + math.exp(-(0.7 - 0.2)))
    assert float(chosen.grad) == pytest.approx(-s, rel=1e-6)
    assert float(rejected.grad) == pytest.approx(s, rel=1e-6)
