"""KTO loss, reference point and weight check against values computed by hand."""
import math

import pytest
import torch

from frl_plugins.optimizers.kto import kto_loss, mismatched, reference_point, weights_in_range


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_loss_with_reference_point_and_weights():
    logratios, labels = [0.9, -0.4, 0.3], [True, False, True]
    z0, beta, wd, wu = 0.2, 0.5, 1.5, 0.75
    expected = [wd * (1 - sigmoid(beta * (0.9 - z0))),
                wu * (1 - sigmoid(beta * (z0 - (-0.4)))),
                wd * (1 - sigmoid(beta * (0.3 - z0)))]
    got = kto_loss(torch.tensor(logratios), torch.tensor(labels), torch.tensor(z0), beta, wd, wu)
    assert got.tolist() == pytest.approx(expected, rel=1e-6)


def test_reference_point_is_mean_mismatched_log_ratio():
    policy, ref = torch.tensor([-3.0, -5.0, -2.0]), torch.tensor([-3.5, -4.0, -3.0])
    expected = ((-3.0 + 3.5) + (-5.0 + 4.0) + (-2.0 + 3.0)) / 3   # 0.5 - 1 + 1 = 0.1667
    assert reference_point(policy, ref).item() == pytest.approx(expected, rel=1e-6)


def test_reference_point_is_clamped_at_zero_and_detached():
    policy = torch.tensor([-6.0, -7.0], requires_grad=True)
    z0 = reference_point(policy, torch.tensor([-5.0, -5.0]))   # mean log-ratio -1.5
    assert z0.item() == 0.0
    assert not z0.requires_grad


def test_batch_of_one_has_no_mismatch_and_a_finite_loss():
    prompts, completions = mismatched(["sort cba:"], ["abc"])
    assert prompts == [] and completions == []
    z0 = reference_point(torch.zeros(0), torch.zeros(0))
    assert z0.item() == 0.0
    loss = kto_loss(torch.tensor([0.4]), torch.tensor([True]), z0, 0.1).mean()
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx(1 - sigmoid(0.1 * 0.4))


def test_mismatch_pairs_completion_i_with_prompt_i_plus_1():
    prompts, completions = mismatched(["p0", "p1", "p2"], ["c0", "c1", "c2"])
    assert list(zip(prompts, completions)) == [("p1", "c0"), ("p2", "c1"), ("p0", "c2")]


def test_mismatched_pairs_never_keep_their_own_prompt_when_rollouts_arrive_grouped_by_prompt():
    """Live rollouts come grouped (4 prompts x 4 completions): a plain rotation paired 12 of 16
    completions with their own prompt, so z0 measured the policy's drift on what it was trained on."""
    prompts = [f"p{g}" for g in range(4) for _ in range(4)]
    completions = [f"c{k}" for k in range(16)]
    got_prompts, got_completions = mismatched(prompts, completions)
    assert got_completions == completions
    assert all(p != own for p, own in zip(got_prompts, prompts))
    assert got_prompts[:4] == ["p1"] * 4 and got_prompts[12:] == ["p0"] * 4   # the next other prompt, cyclically


def test_a_batch_of_one_prompt_has_no_mismatched_pair():
    assert mismatched(["p", "p", "p"], ["a", "b", "c"]) == ([], [])


def test_weight_check_follows_the_recommended_range():
    assert weights_in_range(500, 500, 1.0, 1.0)          # ratio 1
    assert weights_in_range(100, 900, 9.0, 1.0)          # 9*100/900 = 1
    assert not weights_in_range(100, 900, 1.0, 1.0)      # 0.11: desirable examples are too few
    assert not weights_in_range(900, 100, 1.0, 1.0)      # 9: too many
    assert not weights_in_range(16, 0, 1.0, 1.0)         # no undesirable example at all
    assert weights_in_range(7, 9, 1.0, 1.0)              # 0.78 on 16 examples is sampling noise


def test_warns_once_per_stage_when_the_weights_are_off():
    from pathlib import Path

    from feedback_rl import PluginContext
    from frl_plugins.optimizers.kto import KTO
    warnings = []
    kto = KTO(KTO.Options(), PluginContext(name="kto", run_dir=Path("."), stage="s", warn=warnings.append))
    kto._check_weights([True, False] * 8)
    assert warnings == []
    for _ in range(3):
        kto._check_weights([False] * 16)
    assert len(warnings) == 1 and "desirable_weight" in warnings[0] and "'s'" in warnings[0]
