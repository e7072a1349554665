"""An episode's environment tokens (mask 0 inside the completion) carry no loss in any optimizer that trains on
episodes: the loss of GRPO, PPO, DPO and KTO, computed by the plugins on the core's batch, is the same whatever
the policy predicts at the positions whose next token the environment wrote, and moves when the policy's
prediction of a sampled token moves (so the comparison can fail)."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from feedback_rl import PluginContext, SamplingParams
from feedback_rl.loop.batch import for_optimizer
from feedback_rl.modeling.roles import build_models
from feedback_rl.types import BinaryFeedback, PairFeedback, Rollout, ScalarFeedback
from frl_plugins.optimizers.dpo import DPO
from frl_plugins.optimizers.grpo import GRPO
from frl_plugins.optimizers.kto import KTO
from frl_plugins.optimizers.ppo import PPO, value_loss

PROMPTS = ["Guess a number.", "Pick a number."]
SAMPLED = "0123456789"          # the model's turns are digits only ...
ENVIRONMENT = "HLigherowu.!"     # ... the environment's letters only, so a token id says who wrote it


class Perturbed(torch.nn.Module):
    """The model, with noise added to its logits at every position whose NEXT input token is one of ``ids``.
    Its forward takes no ``logits_to_keep``, so the core asks it for every position's logits."""

    def __init__(self, model: torch.nn.Module, ids: set[int]):
        super().__init__()
        self.model, self.ids = model, torch.tensor(sorted(ids))

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=use_cache)
        at = torch.zeros(input_ids.shape, dtype=torch.bool)
        at[:, :-1] = torch.isin(input_ids[:, 1:], self.ids)
        noise = torch.randn(out.logits.shape, generator=torch.Generator().manual_seed(1)) * 5.0
        return SimpleNamespace(logits=out.logits + noise * at.unsqueeze(-1))


def episode(tok, k: int, group: int, turns: list[tuple[str, str]]) -> Rollout:
    """A rollout shaped like loop/episodes.py's: sampled turns (mask 1) with the environment's between (mask 0)."""
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    completion, mask = [], []
    for guess, answer in turns:
        completion += ids(guess) + [tok.eos_token_id]
        mask += [1] * (len(ids(guess)) + 1)
        if answer:
            completion += ids(answer)
            mask += [0] * len(ids(answer))
    return Rollout(PROMPTS[group], "", {}, group, ids(PROMPTS[group]), completion,
                   logprobs=torch.full((len(completion),), -1.0), completion_mask=mask, uid=f"e{k}")


def rollouts(tok) -> list[Rollout]:
    return [episode(tok, 0, 0, [("5", "Higher."), ("8", "Lower."), ("7", "")]),
            episode(tok, 1, 0, [("3", "Higher!"), ("9", "")]),
            episode(tok, 2, 1, [("2", "Low."), ("1", "")]),
            episode(tok, 3, 1, [("6", "Lower."), ("4", "Higher."), ("5", "")])]


def feedback(name: str, rs: list[Rollout]):
    if name in ("grpo", "ppo"):
        return ScalarFeedback(rs, torch.tensor([1.0, 0.0, 0.25, 0.75]))
    if name == "dpo":
        return PairFeedback([rs[0], rs[3]], [rs[1], rs[2]], [1.0, 0.5])
    return BinaryFeedback(rs, [True, False, False, True])


OPTIMIZERS = {"grpo": (GRPO, {"beta": 0.1}), "ppo": (PPO, {"ppo_epochs": 1}), "dpo": (DPO, {}), "kto": (KTO, {})}


def optimizer_on_tiny(name: str, tiny_model_dir, tmp_path):
    """The optimizer ``name`` with its options above, the tiny model's tokenizer, and its models (seeded)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    cls, options = OPTIMIZERS[name]
    ctx = PluginContext(name=name, run_dir=tmp_path, stage="s", seed=0, sampling=SamplingParams(temperature=1.0),
                        warn=lambda msg: None)
    opt = cls(cls.Options(**options), ctx)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    return opt, tok, build_models(opt.roles(), AutoModelForCausalLM.from_pretrained(tiny_model_dir), tok)


def losses(name: str, tiny_model_dir, tmp_path, perturb: set[int] | None) -> float:
    """The optimizer's first minibatch loss on the episodes; with ``perturb``, the policy's logits are noisy
    wherever it predicts one of those ids (the batch, its old log-probs and the reference are the plain model's)."""
    opt, tok, models = optimizer_on_tiny(name, tiny_model_dir, tmp_path)
    fb = feedback(name, rollouts(tok))
    with torch.no_grad():
        prepared = opt.prepare(for_optimizer(opt, fb, models), models)
        mb = next(iter(opt.minibatches(prepared)))
        if perturb is not None:
            models = dataclasses.replace(models, policy=Perturbed(models.policy, perturb))
        loss, _ = opt.loss(mb, models)
    return float(loss)


def ids_of(tiny_model_dir, text: str) -> set[int]:
    from transformers import AutoTokenizer
    return set(AutoTokenizer.from_pretrained(tiny_model_dir)(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_the_policys_predictions_of_environment_tokens_carry_no_loss(name, tiny_model_dir, tmp_path):
    env_ids, sampled_ids = ids_of(tiny_model_dir, ENVIRONMENT), ids_of(tiny_model_dir, SAMPLED)
    assert not env_ids & sampled_ids
    plain = losses(name, tiny_model_dir, tmp_path, None)
    assert losses(name, tiny_model_dir, tmp_path, env_ids) == pytest.approx(plain, abs=1e-6)
    # the same noise where the policy predicts its own sampled digits moves the loss: the comparison can fail
    assert abs(losses(name, tiny_model_dir, tmp_path, sampled_ids) - plain) > 1e-3


def test_value_loss_ignores_the_critics_values_inside_an_environment_turn():
    # sampled, sampled, environment x3, sampled, padding: whatever the critic says inside the hole is no loss
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]])
    old = torch.tensor([[0.2, 0.4, 0.0, 0.0, 0.0, 0.9, 0.0]])
    returns = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.3, 0.5, 0.0, 0.0, 0.0, 1.0, 0.0]])
    garbage = values + torch.tensor([[0.0, 0.0, 40.0, -7.0, 3.0, 0.0, 9.0]])
    # by hand: (1 - 0.3)^2 vs clipped (0.2 + 0.1 - 1)^2 = 0.49; 0.25 vs 0.25; 0 vs 0: 0.5 * (0.49 + 0.25 + 0) / 3
    for v in (values, garbage):
        loss, clipfrac = value_loss(v, old, returns, mask, clip=0.2)
        assert float(loss) == pytest.approx(0.5 * (0.49 + 0.25) / 3, abs=1e-6)
        assert float(clipfrac) == 0.0
