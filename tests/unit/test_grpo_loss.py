"""GRPO's advantage, ratio clipping, k3 KL and the three loss aggregations, against hand values."""
import math

import torch

from feedback_rl.losses import clipped_surrogate
from frl_plugins.optimizers.grpo import aggregate, group_advantages, k3_kl


def clipped_objective(logp, old, adv, eps_low, eps_high):
    """GRPO's use of the core surrogate: one advantage per sequence."""
    return clipped_surrogate(logp, old, adv.unsqueeze(-1), eps_low, eps_high)


def test_group_advantages_normalise_within_each_group():
    rewards = torch.tensor([1.0, 0.0, 0.0, 2.0, 4.0, 6.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    adv = group_advantages(rewards, groups, scale="group", eps=0.0)
    # group 0: mean 1/3, unbiased std sqrt(((2/3)^2 + 2*(1/3)^2)/2) = sqrt(1/3)
    s0 = math.sqrt(1 / 3)
    expected0 = [(1 - 1 / 3) / s0, (0 - 1 / 3) / s0, (0 - 1 / 3) / s0]
    # group 1: mean 4, std sqrt((4+0+4)/2) = 2
    expected1 = [-1.0, 0.0, 1.0]
    assert torch.allclose(adv, torch.tensor(expected0 + expected1), atol=1e-6)


def test_dr_grpo_advantages_are_not_scaled_and_equal_rewards_give_zero():
    rewards = torch.tensor([1.0, 1.0, 3.0, 5.0])
    groups = torch.tensor([0, 0, 1, 1])
    adv = group_advantages(rewards, groups, scale="none")
    assert adv.tolist() == [0.0, 0.0, -1.0, 1.0]
    assert torch.isfinite(group_advantages(rewards, groups, scale="group")).all()


def test_batch_scaling_divides_by_the_batch_std():
    rewards = torch.tensor([0.0, 2.0, 4.0, 6.0])
    adv = group_advantages(rewards, torch.tensor([0, 0, 1, 1]), scale="batch", eps=0.0)
    batch_std = math.sqrt(sum((r - 3) ** 2 for r in [0, 2, 4, 6]) / 3)
    assert torch.allclose(adv, torch.tensor([-1, 1, -1, 1]) / batch_std)


def test_k3_kl_matches_the_formula_and_is_zero_for_equal_policies():
    logp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0]])
    d = [-0.5, 1.0]
    expected = [math.exp(x) - x - 1 for x in d]
    assert torch.allclose(k3_kl(logp, ref), torch.tensor([expected]), atol=1e-6)
    assert torch.equal(k3_kl(logp, logp), torch.zeros_like(logp))


def test_clipped_objective_clips_the_ratio_on_the_side_the_advantage_pushes():
    old = torch.zeros(2, 2)
    logp = torch.log(torch.tensor([[1.5, 0.5], [1.5, 0.5]]))   # ratios 1.5 and 0.5
    adv = torch.tensor([1.0, -1.0])
    loss, clipped = clipped_objective(logp, old, adv, eps_low=0.2, eps_high=0.2)
    # A>0: min(1.5, 1.2)=1.2 -> loss -1.2 (clipped); min(0.5, 0.8)=0.5 -> -0.5 (not clipped)
    # A<0: min(-1.5, -1.2)=-1.5 -> 1.5 (not clipped); min(-0.5, -0.8)=-0.8 -> 0.8 (clipped)
    assert torch.allclose(loss, torch.tensor([[-1.2, -0.5], [1.5, 0.8]]))
    assert clipped.tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_clip_higher_uses_the_upper_epsilon():
    logp = torch.log(torch.tensor([[1.5]]))
    loss, _ = clipped_objective(logp, torch.zeros(1, 1), torch.tensor([1.0]), eps_low=0.2, eps_high=0.28)
    assert torch.allclose(loss, torch.tensor([[-1.28]]))


def test_three_aggregations_on_ragged_sequences():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    # grpo: mean per sequence (2 and 4) then mean -> 3
    assert aggregate(per_token, mask, "grpo", max_len=4).item() == 3.0
    # dapo: all tokens together: (1+2+3+4)/4 = 2.5
    assert aggregate(per_token, mask, "dapo", max_len=4).item() == 2.5
    # dr_grpo: sum / (sequences * max_len) = 10 / 8
    assert aggregate(per_token, mask, "dr_grpo", max_len=4).item() == 10 / 8
