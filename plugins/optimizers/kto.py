"""KTO: learn from completions labelled desirable or undesirable, one at a time (no pairs needed).

With ``r = log pi(y|x) - log ref(y|x)`` (sequence log-probs) and a reference point ``z0``, the loss
of a desirable completion is ``wD (1 - sigmoid(beta (r - z0)))`` and of an undesirable one
``wU (1 - sigmoid(beta (z0 - r)))``, averaged over the batch (Ethayarajh et al. 2024; TRL).
``z0`` estimates KL(pi || ref) from mismatched pairs: completion i scored after prompt i+1, so it
says how far the policy drifted on text it was not trained to prefer. It is a baseline, not a target:
detached, and clamped at 0 (a KL is never negative).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pydantic import Field

from feedback_rl import LengthLimited, Optimizer, TokenBatch, completion_logprobs, hookimpl, pack, pad_id, rollout_batch

# The KTO paper recommends wD * n_desirable / (wU * n_undesirable) in [1, 4/3].
RATIO_RANGE = (1.0, 4.0 / 3.0)


def kto_loss(logratios: torch.Tensor, desirable: torch.Tensor, z0: torch.Tensor | float, beta: float,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> torch.Tensor:
    """Per-example loss from ``log pi - log ref`` of each completion and its label."""
    good = 1 - torch.sigmoid(beta * (logratios - z0))
    bad = 1 - torch.sigmoid(beta * (z0 - logratios))
    return torch.where(desirable, desirable_weight * good, undesirable_weight * bad)


def reference_point(policy_logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """z0: mean log-ratio on mismatched pairs, detached, at least 0; 0 when there are none."""
    if policy_logps.numel() == 0:
        return torch.zeros(())
    return (policy_logps - ref_logps).mean().detach().clamp(min=0.0)


def mismatched(prompts: list, completions: list) -> tuple[list, list]:
    """Completion i after prompt i+1 (a rotation, as TRL's KL dataset); none for a batch of one."""
    if len(prompts) < 2:
        return [], []
    return prompts[1:] + prompts[:1], list(completions)


def weights_in_range(n_good: int, n_bad: int, wD: float, wU: float, sigmas: float = 2.0) -> bool:
    """False only when ``wD n_good / (wU n_bad)`` is outside the recommended range by more than
    sampling noise (``sigmas`` standard errors of the desirable fraction), so a balanced dataset
    seen in random batches does not warn."""
    n = n_good + n_bad
    p = n_good / n
    se = sigmas * math.sqrt(p * (1 - p) / n)
    lo_p, hi_p = max(0.0, p - se), min(1.0, p + se)
    ratio = lambda q: math.inf if q >= 1 else wD * q / (wU * (1 - q))  # noqa: E731
    return ratio(hi_p) >= RATIO_RANGE[0] and ratio(lo_p) <= RATIO_RANGE[1]


@dataclass
class KTOBatch:
    tokens: TokenBatch
    desirable: torch.Tensor
    ref_logps: torch.Tensor
    kl_tokens: TokenBatch | None   # the mismatched pairs
    kl_ref_logps: torch.Tensor


class KTO(Optimizer):
    name = "kto"
    feedback = "binary"

    class Options(LengthLimited):
        beta: float = Field(0.1, gt=0.0, description="strength of the pull towards the reference")
        desirable_weight: float = Field(1.0, gt=0.0)
        undesirable_weight: float = Field(1.0, gt=0.0)

    def __init__(self, options, context):
        super().__init__(options, context)
        self._counts = [0, 0]   # desirable, undesirable seen this stage
        self._warned = False

    def roles(self):
        return {"reference"}

    def prepare(self, feedback, models):
        if not len(feedback):
            return None
        self._check_weights(feedback.desirable)
        rollouts = feedback.rollouts
        tokens = rollout_batch(rollouts, models.tokenizer, self.options.max_length)
        # the mismatched pairs are the same token ids, each completion after another row's prompt
        kl_prompts, kl_rows = mismatched([r.prompt_ids for r in rollouts], rollouts)
        kl_tokens = pack(kl_prompts, [r.completion_ids for r in kl_rows], pad_id(models.tokenizer),
                         [r.completion_mask for r in kl_rows], self.options.max_length) if kl_prompts else None
        with torch.no_grad():
            ref = completion_logprobs(models.reference, tokens)
            kl_ref = completion_logprobs(models.reference, kl_tokens) if kl_tokens is not None else torch.zeros(0)
        return KTOBatch(tokens, torch.tensor(feedback.desirable, dtype=torch.bool), ref, kl_tokens, kl_ref)

    def minibatches(self, prepared):
        if prepared is not None:
            yield prepared

    def loss(self, batch, models):
        o = self.options
        logratios = completion_logprobs(models.policy, batch.tokens) - batch.ref_logps
        with torch.no_grad():
            kl_policy = completion_logprobs(models.policy, batch.kl_tokens) if batch.kl_tokens is not None else torch.zeros(0)
        z0 = reference_point(kl_policy, batch.kl_ref_logps)
        loss = kto_loss(logratios, batch.desirable, z0, o.beta, o.desirable_weight, o.undesirable_weight).mean()
        rewards = o.beta * logratios.detach()
        metrics = {"kto/z0": float(z0), "desirable_frac": batch.desirable.float().mean().item()}
        if batch.desirable.any():
            metrics["rewards/chosen"] = rewards[batch.desirable].mean().item()
        if (~batch.desirable).any():
            metrics["rewards/rejected"] = rewards[~batch.desirable].mean().item()
        return loss, metrics

    def _check_weights(self, desirable: list[bool]) -> None:
        self._counts[0] += sum(desirable)
        self._counts[1] += len(desirable) - sum(desirable)
        good, bad = self._counts
        o = self.options
        if self._warned or weights_in_range(good, bad, o.desirable_weight, o.undesirable_weight):
            return
        self._warned = True
        ratio = o.desirable_weight * good / (o.undesirable_weight * bad) if bad else math.inf
        self.context.warn(f"stage '{self.context.stage}' (kto): desirable_weight*n_desirable / "
                          f"(undesirable_weight*n_undesirable) = {ratio:.2f} over {good + bad} examples so far; "
                          f"the KTO paper recommends 1 to 4/3: adjust desirable_weight or undesirable_weight")


@hookimpl
def frl_register_optimizers(register):
    register(KTO)
