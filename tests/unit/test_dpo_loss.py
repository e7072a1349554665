"""DPO losses against values computed by hand with plain math."""
import math

import pytest
import torch

from frl_plugins.optimizers.dpo import DPO, dpo_loss


def log_sigmoid(x: float) -> float:
    return -math.log(1 + math.exp(-x))


CHOSEN = [1.0, -0.5, 0.25]     # log pi - log ref of the chosen completions
REJECTED = [0.2, 0.3, 0.25]    # ... of the rejected ones
MARGINS = [c - r for c, r in zip(CHOSEN, REJECTED)]   # 0.8, -0.8, 0.0


def run(loss_type, beta, smoothing=0.0):
    return dpo_loss(torch.tensor(CHOSEN), torch.tensor(REJECTED), beta, loss_type, smoothing).tolist()


def test_sigmoid_is_minus_log_sigmoid_of_beta_margin():
    expected = [-log_sigmoid(0.5 * h) for h in MARGINS]
    assert run("sigmoid", 0.5) == pytest.approx(expected, rel=1e-6)
    assert expected[2] == pytest.approx(math.log(2))   # no preference yet: log 2


def test_sigmoid_with_label_smoothing_is_cdpo():
    e = 0.1
    expected = [-(1 - e) * log_sigmoid(0.5 * h) - e * log_sigmoid(-0.5 * h) for h in MARGINS]
    assert run("sigmoid", 0.5, e) == pytest.approx(expected, rel=1e-6)
    # cDPO keeps a small loss even for a large margin, unlike DPO
    big = dpo_loss(torch.tensor([100.0]), torch.tensor([0.0]), 1.0, "sigmoid", e).item()
    assert big == pytest.approx(e * 100.0, rel=1e-3)


def test_hinge_is_relu_of_one_minus_beta_margin():
    expected = [max(0.0, 1 - 2.0 * h) for h in MARGINS]   # 0 for the first: margin 0.8 * 2 > 1
    assert run("hinge", 2.0) == pytest.approx(expected, rel=1e-6)
    assert expected[0] == 0.0


def test_ipo_is_squared_distance_to_half_inverse_beta():
    expected = [(h - 1 / (2 * 0.5)) ** 2 for h in MARGINS]   # target margin 1.0
    assert run("ipo", 0.5) == pytest.approx(expected, rel=1e-6)


def test_unknown_loss_type_is_an_error():
    with pytest.raises(ValueError):
        run("nope", 0.1)


def test_label_smoothing_with_other_losses_is_a_recipe_error():
    class Stage:
        pass
    bad = DPO.check_stage(Stage(), DPO.Options(loss="ipo", label_smoothing=0.1))
    assert bad and bad[0] == ("optimizer", "label_smoothing")
    assert DPO.check_stage(Stage(), DPO.Options(label_smoothing=0.1)) is None
