"""PPO's math against values computed by hand on tiny tensors."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from feedback_rl import PluginContext, SamplingParams
from feedback_rl.loop.batch import for_optimizer
from frl_plugins.optimizers.ppo import (
    PPO, AdaptiveKLController, explained_variance, gae, kl_penalised_rewards, policy_loss, ppo_objective,
    value_loss,
)


def test_gae_three_steps_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    mask = torch.ones(1, 3)
    g, lam = 0.9, 0.8
    # backwards: the value after the last token is 0 (the episode ended)
    d2 = 1.0 + g * 0.0 - 0.7
    a2 = d2
    d1 = 0.0 + g * 0.7 - 0.6
    a1 = d1 + g * lam * a2
    d0 = 0.0 + g * 0.6 - 0.5
    a0 = d0 + g * lam * a1
    adv, ret = gae(rewards, values, mask, g, lam)
    assert adv[0].tolist() == pytest.approx([a0, a1, a2], abs=1e-6)
    assert [a0, a1, a2] == pytest.approx([0.21712, 0.246, 0.3], abs=1e-6)
    assert ret[0].tolist() == pytest.approx([a0 + 0.5, a1 + 0.6, a2 + 0.7], abs=1e-6)


def test_gae_ignores_padding_after_the_last_token():
    rewards = torch.tensor([[0.5, 2.0, 9.0]])
    values = torch.tensor([[1.0, 3.0, 9.0]])   # the padded step's value must not leak back
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # gamma 1, lam 1: A_t = sum of future rewards - V_t
    adv, ret = gae(rewards, values, mask, 1.0, 1.0)
    assert adv[0].tolist() == pytest.approx([2.5 - 1.0, 2.0 - 3.0, 0.0])
    assert ret[0, :2].tolist() == pytest.approx([2.5, 2.0])


def test_gae_treats_a_masked_hole_as_no_step_at_all():
    # the three steps above with an environment's tokens (mask 0) between the first and the second, and
    # padding after the last: the hole's reward and value must not count, nor may gamma * lam accrue over it
    rewards = torch.tensor([[0.0, 5.0, 5.0, 0.0, 1.0, 4.0]])
    values = torch.tensor([[0.5, 9.0, 8.0, 0.6, 0.7, 3.0]])
    mask = torch.tensor([[1.0, 0.0, 0.0, 1.0, 1.0, 0.0]])
    # by hand, gamma 0.9, lam 0.8, backwards over the masked-in tokens 4, 3, 0:
    #   t=4: delta = 1 + 0.9 * 0 - 0.7 = 0.3 (the last masked-in token bootstraps 0), A = 0.3
    #   t=3: delta = 0 + 0.9 * 0.7 - 0.6 = 0.03, A = 0.03 + 0.72 * 0.3 = 0.246
    #   t=0: delta = 0 + 0.9 * 0.6 - 0.5 = 0.04 (the next value is token 3's), A = 0.04 + 0.72 * 0.246 = 0.21712
    adv, ret = gae(rewards, values, mask, 0.9, 0.8)
    assert adv[0].tolist() == pytest.approx([0.21712, 0.0, 0.0, 0.246, 0.3, 0.0], abs=1e-6)
    assert ret[0].tolist() == pytest.approx([0.71712, 0.0, 0.0, 0.846, 1.0, 0.0], abs=1e-6)


def test_gae_with_gamma_and_lam_one_sums_the_rewards_of_later_steps_across_a_hole():
    # A_t = sum of later masked-in rewards - V_t: row 2 has a hole at the start of its completion
    rewards = torch.tensor([[0.5, 7.0, 2.0, 0.0], [0.0, 0.0, 1.0, 3.0]])
    values = torch.tensor([[1.0, 7.0, 3.0, 0.0], [0.0, 5.0, 0.25, 2.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    adv, _ = gae(rewards, values, mask, 1.0, 1.0)
    assert adv.tolist() == [[2.5 - 1.0, 0.0, 2.0 - 3.0, 0.0], [0.0, 0.0, 4.0 - 0.25, 3.0 - 2.0]]


def test_gae_over_any_mask_equals_gae_over_the_masked_in_tokens_alone():
    # the definition behind the hand-computed case: drop every masked position, run GAE on what is left
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(6, 12, generator=g), torch.randn(6, 12, generator=g)
    mask = (torch.rand(6, 12, generator=g) < 0.6).float()
    adv, ret = gae(rewards, values, mask, 0.99, 0.95)
    for row in range(6):
        keep = mask[row].bool()
        n = int(keep.sum())
        alone_adv, alone_ret = gae(rewards[row, keep][None], values[row, keep][None], torch.ones(1, n), 0.99, 0.95)
        assert adv[row, keep].tolist() == pytest.approx(alone_adv[0].tolist(), abs=1e-6)
        assert ret[row, keep].tolist() == pytest.approx(alone_ret[0].tolist(), abs=1e-6)
        assert torch.all(adv[row, ~keep] == 0)


def test_kl_penalty_per_token_and_score_at_the_last_completion_token():
    logps = torch.tensor([[-1.0, -0.5, -2.0, -0.1], [-1.0, -1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -0.5, -1.0, -0.1], [-2.0, -1.0, -1.0, -1.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])  # row 2: one completion token
    rewards, kl = kl_penalised_rewards(torch.tensor([3.0, -1.0]), logps, ref, mask, kl_coef=0.1)
    assert kl.flatten().tolist() == pytest.approx([0.0, 0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    assert rewards.flatten().tolist() == pytest.approx([0.0, 0.0, 0.1 + 3.0, 0.0, -0.1 - 1.0, 0.0, 0.0, 0.0])


def test_kl_penalty_puts_the_score_on_the_last_masked_in_token_after_a_hole():
    # sampled, environment, environment, sampled, padding: the score belongs to token 3, not to the hole
    # or to the padding, and the hole pays no KL
    logps = torch.tensor([[-1.0, -2.0, -2.0, -1.0, -3.0]])
    ref = torch.tensor([[-2.0, -1.0, -1.0, -1.5, -1.0]])
    mask = torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0]])
    rewards, kl = kl_penalised_rewards(torch.tensor([2.0]), logps, ref, mask, kl_coef=0.1)
    assert kl[0].tolist() == pytest.approx([1.0, 0.0, 0.0, 0.5, 0.0])
    assert rewards[0].tolist() == pytest.approx([-0.1, 0.0, 0.0, -0.05 + 2.0, 0.0])


def test_policy_loss_clips_the_ratio():
    old = torch.zeros(1, 3)
    logps = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    loss, clipfrac = policy_loss(logps, old, adv, torch.ones(1, 3), clip=0.2)
    # token 1: max(-1.5, -1.2) = -1.2 (clipped); token 2: max(0.5, 0.8) = 0.8 (clipped);
    # token 3: ratio 1.1 is inside [0.8, 1.2]: -2.2
    assert float(loss) == pytest.approx((-1.2 + 0.8 - 2.2) / 3, abs=1e-6)
    assert float(clipfrac) == pytest.approx(2 / 3)


def test_value_loss_clips_around_the_old_values():
    old = torch.tensor([[1.0, 1.0, 5.0]])
    new = torch.tensor([[1.5, 0.9, 0.0]])
    returns = torch.tensor([[2.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, clipfrac = value_loss(new, old, returns, mask, clip=0.2)
    # token 1: clipped value 1.2, max((1.5-2)^2, (1.2-2)^2) = 0.64 (clipped); token 2: 0.9^2 = 0.81
    assert float(loss) == pytest.approx(0.5 * (0.64 + 0.81) / 2, abs=1e-6)
    assert float(clipfrac) == pytest.approx(0.5)


def test_adaptive_kl_controller_update():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    ctl.update(9.0, n_steps=256)           # error 0.5 clipped to 0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 256 / 10000))
    before = ctl.value
    ctl.update(5.4, n_steps=100)           # error -0.1
    assert ctl.value == pytest.approx(before * (1 - 0.1 * 100 / 10000))


def test_objective_mixes_value_and_ptx_terms():
    pg, vf, ptx = torch.tensor(0.5), torch.tensor(2.0), torch.tensor(3.0)
    assert float(ppo_objective(pg, vf, 0.1)) == pytest.approx(0.5 + 0.1 * 2.0)
    assert float(ppo_objective(pg, vf, 0.1, ptx, 0.5)) == pytest.approx(0.5 + 0.2 + 0.5 * 3.0)


def test_explained_variance_by_hand():
    returns = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    values = torch.tensor([[1.0, 2.0, 2.0, -5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    # Var(R) = 2/3; R - V = [0, 0, 1], Var = 2/9; 1 - (2/9)/(2/3) = 2/3
    assert explained_variance(values, returns, mask) == pytest.approx(2 / 3, rel=1e-6)


def _ppo(tmp_path: Path, tiny_model_dir: Path, **options):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from feedback_rl.modeling.roles import build_models
    from feedback_rl.types import Rollout, ScalarFeedback
    ctx = PluginContext(name="ppo", run_dir=tmp_path, seed=0, sampling=SamplingParams(temperature=1.0))
    ppo = PPO(PPO.Options(**options), ctx)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    models = build_models(ppo.roles(), AutoModelForCausalLM.from_pretrained(tiny_model_dir), tok)
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    rollouts = [Rollout(f"{a}+1=", str(a + 1), {}, k, ids(f"{a}+1="), ids(str(a + 1)) + [tok.eos_token_id])
                for k, a in enumerate((10, 23, 57))]
    return ppo, models, ScalarFeedback(rollouts, torch.tensor([1.0, 0.0, 0.5]))


def test_ptx_term_is_added_with_its_coefficient(tmp_path, tiny_model_dir):
    ref = {"generator": "addition", "split": "train", "size": 8}
    with_ptx, models, fb = _ppo(tmp_path, tiny_model_dir, ptx_data=ref, ptx_coef=0.5, ppo_epochs=1)
    without, _, _ = _ppo(tmp_path, tiny_model_dir, ppo_epochs=1)
    batch = with_ptx.prepare(for_optimizer(with_ptx, fb, models), models)
    mb = next(iter(with_ptx.minibatches(batch)))
    with torch.no_grad():
        loss, m = with_ptx.loss(mb, models)
        plain, _ = without.loss(mb, models)
    assert m["ptx_loss"] > 0
    assert float(loss) == pytest.approx(float(plain) + 0.5 * m["ptx_loss"], rel=1e-5)
    assert float(plain) == pytest.approx(m["policy_loss"] + 0.1 * m["value_loss"], rel=1e-5)


def test_minibatches_cover_every_rollout_each_epoch_and_kl_state_round_trips(tmp_path, tiny_model_dir):
    ppo, models, fb = _ppo(tmp_path, tiny_model_dir, ppo_epochs=2, num_minibatches=2, target_kl=1.0)
    batch = ppo.prepare(for_optimizer(ppo, fb, models), models)
    sizes = [len(mb.tokens) for mb in ppo.minibatches(batch)]
    assert sizes == [2, 1, 2, 1]
    ppo.after_step({"kl/sequence": 3.0})          # far above target: the coefficient grows by 1 + 0.2 * 3 / 10000
    assert ppo.kl_ctl.value == pytest.approx(0.05 * (1 + 0.2 * 3 / 10000))
    fresh, _, _ = _ppo(tmp_path, tiny_model_dir, target_kl=1.0)
    fresh.load_state_dict(ppo.state_dict())
    assert fresh.kl_ctl.value == ppo.kl_ctl.value
    assert not math.isnan(ppo._stats["explained_variance"])


def test_missing_eos_penalty_lowers_the_return_of_a_cut_completion(tmp_path, tiny_model_dir):
    ppo, models, fb = _ppo(tmp_path, tiny_model_dir, missing_eos_penalty=2.0, gamma=1.0, lam=1.0,
                           whiten_advantages=False)
    fb.rollouts[1].truncated = True
    batch = ppo.prepare(for_optimizer(ppo, fb, models), models)
    last = batch.tokens.target_mask.cumsum(-1).argmax(-1)   # the last completion position of each row
    # the reference is the starting policy: the KL is 0, so the return at the last token is the score
    got = batch.returns[torch.arange(3), last].tolist()
    assert got == pytest.approx([1.0, 0.0 - 2.0, 0.5], abs=1e-5)


def test_shared_critic_trains_the_head_and_the_policy_trunk_in_one_loss(tmp_path, tiny_model_dir):
    ppo, models, fb = _ppo(tmp_path, tiny_model_dir, critic="shared", ppo_epochs=1)
    assert ppo.roles() == {"critic:shared", "reference"}
    prepared = ppo.prepare(for_optimizer(ppo, fb, models), models)
    loss, metrics = ppo.loss(next(iter(ppo.minibatches(prepared))), models)
    loss.backward()
    assert models.critic.score.weight.grad is not None
    assert models.policy.base_model.wte.weight.grad is not None
    assert metrics["value_loss"] > 0
