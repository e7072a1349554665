"""GRPO: group-relative advantages, a clipped ratio, and an optional k3 KL to the reference.

Advantages need no critic: each completion is compared with the other completions of its prompt.
``loss_type`` picks how per-token losses are aggregated:
- ``grpo``:    mean over each sequence's tokens, then over sequences (favours short answers);
- ``dr_grpo``: sum over all tokens / (sequences x max_new_tokens), a constant (Dr. GRPO);
- ``dapo``:    sum over all tokens / number of tokens in the batch (token-level, DAPO).

The rollouts were sampled by the backend, possibly an update earlier (``rollout.overlap``): the core
hands the truncated importance weights with the batch (``rollout.is_cap``) and GRPO multiplies each
token's policy loss by them.

An episode its chat template split over several rows trains every row with the episode's advantage (one
per episode, against the other episodes of its group); ``grpo``'s mean over sequences counts each row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from feedback_rl import Optimizer, PluginOptions, hookimpl
from feedback_rl.losses import clipped_surrogate
from feedback_rl.tokens import TokenBatch, masked_mean, sequence_logprobs


def group_advantages(rewards: torch.Tensor, groups: torch.Tensor, scale: str = "group",
                     eps: float = 1e-4) -> torch.Tensor:
    """(r - mean of its group), divided by the group's std (``group``), the batch's (``batch``) or 1 (``none``)."""
    adv = torch.empty_like(rewards)
    stds = torch.empty_like(rewards)
    for g in groups.unique():
        idx = groups == g
        r = rewards[idx]
        adv[idx] = r - r.mean()
        stds[idx] = r.std(unbiased=True) if r.numel() > 1 else 0.0
    if scale == "group":
        return adv / (stds + eps)
    if scale == "batch":
        return adv / (rewards.std(unbiased=True) + eps)
    return adv


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || ref): exp(ref - logp) - (ref - logp) - 1 (>= 0, unbiased)."""
    d = ref_logps - logps
    return torch.exp(d) - d - 1


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str, max_len: int) -> torch.Tensor:
    if loss_type == "grpo":
        return masked_mean(per_token, mask, dim=1).mean()
    if loss_type == "dr_grpo":
        return (per_token * mask).sum() / (per_token.shape[0] * max_len)
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)  # dapo


@dataclass
class GRPOBatch:
    tokens: TokenBatch
    advantages: torch.Tensor
    old_logps: torch.Tensor | None           # several passes: the policy before the update; one pass: None
    ref_logps: torch.Tensor | None
    is_weights: torch.Tensor | None = None   # the core's truncated IS weights against the backend


class GRPO(Optimizer):
    name = "grpo"
    feedback = "scalar"
    importance_weighted = True
    trains_segments = True

    class Options(PluginOptions):
        beta: float = Field(0.0, ge=0.0, description="KL weight; 0 loads no reference model")
        epsilon: float = Field(0.2, gt=0.0)
        epsilon_high: float | None = Field(None, gt=0.0, description="upper clip (DAPO clip-higher); default epsilon")
        loss_type: Literal["grpo", "dr_grpo", "dapo"] = "dapo"
        scale_rewards: Literal["group", "batch", "none"] = "group"
        num_iterations: int = Field(1, ge=1, description="optimizer passes over each batch of rollouts")

    def __init__(self, options, context):
        super().__init__(options, context)
        self._zero_std = 0.0

    @classmethod
    def check_stage(cls, stage, options):
        if stage.rollout.num_generations < 2:
            return ("rollout", "num_generations"), "GRPO compares completions of one prompt: set it to 2 or more"
        return None

    def roles(self):
        return {"reference"} if self.options.beta > 0 else set()

    def old_logprobs(self):
        # one pass: the old policy is the current one, whose log-probs the loss's own forward gives
        # (the ratio is 1, only its gradient matters)
        return self.options.num_iterations > 1

    def prepare(self, batch, models):
        o = self.options
        # one advantage per episode, against the other episodes of its group; every segment of it trains with it
        adv = batch.tokens.spread(group_advantages(batch.rewards, batch.groups, o.scale_rewards))
        self._zero_std = float((adv == 0).float().mean())
        with torch.no_grad():
            ref = (sequence_logprobs(models.reference, batch.tokens, batch.temperature)
                   if models.reference is not None else None)
        return GRPOBatch(batch.tokens, adv, batch.old_logps, ref, batch.is_weights)

    def minibatches(self, prepared):
        for _ in range(self.options.num_iterations):
            yield prepared

    def loss(self, batch, models):
        o = self.options
        logps, entropy = sequence_logprobs(models.policy, batch.tokens, self.context.sampling.temperature,
                                           with_entropy=True)
        mask = batch.tokens.target_mask
        old = batch.old_logps if batch.old_logps is not None else logps.detach()
        per_token, clipped = clipped_surrogate(logps, old, batch.advantages.unsqueeze(-1), o.epsilon,
                                               o.epsilon_high or o.epsilon)
        if batch.is_weights is not None:
            per_token = per_token * batch.is_weights
        metrics = {"clip_frac": masked_mean(clipped, mask).item(), "entropy": masked_mean(entropy, mask).item(),
                   "adv_zero_frac": self._zero_std}
        if batch.ref_logps is not None:
            kl = k3_kl(logps, batch.ref_logps)
            per_token = per_token + o.beta * kl
            # per token (what beta weighs) and per completion (what the health limit and the chart read)
            metrics["kl/token"] = masked_mean(kl, mask).item()
            metrics["kl/sequence"] = (kl.detach() * mask).sum(-1).mean().item()
        loss = aggregate(per_token, mask, o.loss_type, self.context.sampling.max_new_tokens)
        return loss, metrics


@hookimpl
def frl_register_optimizers(register):
    register(GRPO)
