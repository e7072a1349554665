"""GRPO: group-relative advantages, a clipped ratio, and an optional k3 KL to the reference.

Advantages need no critic: each completion is compared with the other completions of its prompt.
``loss_type`` picks how per-token losses are aggregated:
- ``grpo``:    mean over each sequence's tokens, then over sequences (favours short answers);
- ``dr_grpo``: sum over all tokens / (sequences x max_new_tokens), a constant (Dr. GRPO);
- ``dapo``:    sum over all tokens / number of tokens in the batch (token-level, DAPO).

The generation backend (vLLM above all) may score tokens slightly differently from the trainer.
``logprob_mismatch`` logs how much; ``is_cap`` corrects for it (the core's ``backend_correction``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from feedback_rl import (
    Optimizer, PluginOptions, TokenBatch, backend_correction, behaviour_logprobs, clipped_surrogate,
    effective_is_cap, hookimpl, is_cap_option, masked_mean, rollout_batch, sequence_logprobs,
)


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
    old_logps: torch.Tensor | None
    ref_logps: torch.Tensor | None
    is_weights: torch.Tensor | None = None   # truncated IS weights against the backend's log-probs
    behaviour: torch.Tensor | None = None    # one pass: the backend's log-probs, compared in the loss's forward
    is_cap: float | None = None


class GRPO(Optimizer):
    name = "grpo"
    feedback = "scalar"

    class Options(PluginOptions):
        beta: float = Field(0.0, ge=0.0, description="KL weight; 0 loads no reference model")
        epsilon: float = Field(0.2, gt=0.0)
        epsilon_high: float | None = Field(None, gt=0.0, description="upper clip (DAPO clip-higher); default epsilon")
        loss_type: Literal["grpo", "dr_grpo", "dapo"] = "dapo"
        scale_rewards: Literal["group", "batch", "none"] = "group"
        num_iterations: int = Field(1, ge=1, description="optimizer passes over each batch of rollouts")
        logprob_mismatch: bool = Field(False, description="log rollout/logprob_mismatch and rollout/is_ratio_mean "
                                       "(trainer vs backend log-probs)")
        is_cap: float | None = is_cap_option()

    def __init__(self, options, context):
        super().__init__(options, context)
        self._mismatch: dict[str, float] = {}   # trainer vs backend log-prob gauges of the prepared batch
        self._zero_std = 0.0

    @classmethod
    def check_stage(cls, stage, options):
        if stage.rollout.num_generations < 2:
            return ("rollout", "num_generations"), "GRPO compares completions of one prompt: set it to 2 or more"
        return None

    def roles(self):
        return {"reference"} if self.options.beta > 0 else set()

    def prepare(self, feedback, models):
        if not feedback.rollouts:
            return None
        o = self.options
        device = next(models.policy.parameters()).device
        tokens = rollout_batch(feedback.rollouts, models.tokenizer).to(device)
        groups = torch.tensor([r.group for r in feedback.rollouts])
        adv = group_advantages(feedback.rewards, groups, o.scale_rewards).to(device)
        self._zero_std = float((adv == 0).float().mean())
        behaviour = behaviour_logprobs(feedback.rollouts, tokens)
        temp = self.context.sampling.temperature
        cap = effective_is_cap(o.is_cap, self.context)
        one_pass = o.num_iterations == 1
        with torch.no_grad():
            # one pass: the old policy is the current one, whose log-probs the loss's own forward gives
            # (the ratio is 1, only its gradient matters; the IS weights and gauges are computed there)
            trainer = sequence_logprobs(models.policy, tokens, temp) if not one_pass else None
            ref = sequence_logprobs(models.reference, tokens, temp) if models.reference is not None else None
        weights, self._mismatch = backend_correction(trainer, behaviour, tokens.target_mask, cap, self.context.stage)
        compare = one_pass and (cap is not None or o.logprob_mismatch)
        return GRPOBatch(tokens, adv, trainer, ref, weights, behaviour if compare else None, cap)

    def minibatches(self, prepared):
        if prepared is None:
            return
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
        weights, mismatch = batch.is_weights, self._mismatch
        if batch.behaviour is not None:
            weights, mismatch = backend_correction(logps.detach(), batch.behaviour, mask, batch.is_cap,
                                                   self.context.stage)
        if weights is not None:
            per_token = per_token * weights
        metrics = {"clip_frac": masked_mean(clipped, mask).item(), "entropy": masked_mean(entropy, mask).item(),
                   "adv_zero_frac": self._zero_std, **mismatch}
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
