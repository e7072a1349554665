"""KTO: learn from completions labelled desirable or undesirable, one at a time (no pairs needed).

With ``r = log pi(y|x) - log ref(y|x)`` (sequence log-probs) and a reference point ``z0``, the loss
of a desirable completion is ``wD (1 - sigmoid(beta (r - z0)))`` and of an undesirable one
``wU (1 - sigmoid(beta (z0 - r)))``, averaged over the batch (Ethayarajh et al. 2024; TRL).
``z0`` estimates KL(pi || ref) from mismatched pairs: each completion scored after the prompt of the next
row that asked something else (live rollouts arrive grouped by prompt, so the next row would mostly be
its own prompt again), so it says how far the policy drifted on text it was not trained to prefer. It is a baseline, not a target:
detached, and clamped at 0 (a KL is never negative).

An episode its chat template split over several rows counts whole: ``r`` sums its rows' log-ratios
(``completion_logprobs`` sums per episode); the mismatched pairs for ``z0`` take each episode's first row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from pydantic import Field

from feedback_rl import LengthLimited, Optimizer, Rollout, hookimpl
from feedback_rl.tokens import TokenBatch, completion_logprobs

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
    """Completion i after the prompt of the next row (cyclically) whose prompt differs from row i's: TRL's
    rotation of its KL dataset, skipping rows of the same prompt. A completion whose prompt every row
    shares has no mismatched pair; none for a batch of one."""
    out_prompts, out_completions = [], []
    n = len(prompts)
    for i in range(n):
        other = next((prompts[(i + k) % n] for k in range(1, n) if prompts[(i + k) % n] != prompts[i]), None)
        if other is not None:
            out_prompts.append(other)
            out_completions.append(completions[i])
    return out_prompts, out_completions


def mismatched_rollouts(rollouts: list[Rollout]) -> list[Rollout]:
    """The mismatched pairs as rollouts: each one's sampled completion ids after another prompt's ids."""
    prompts, rows = mismatched([tuple(r.prompt_ids) for r in rollouts], rollouts)
    return [replace(r, prompt_ids=list(p)) for p, r in zip(prompts, rows)]


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
    kl_tokens: TokenBatch | None   # the mismatched pairs (None: every row has one prompt)
    kl_ref_logps: torch.Tensor | None


class KTO(Optimizer):
    name = "kto"
    feedback = "binary"
    trains_segments = True

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

    def prepare(self, batch, models):
        self._check_weights(batch.feedback.desirable)
        kl_rows = mismatched_rollouts(batch.rollouts)
        kl_tokens = batch.pack(kl_rows, self.options.max_length) if kl_rows else None
        with torch.no_grad():
            ref = completion_logprobs(models.reference, batch.tokens)
            kl_ref = completion_logprobs(models.reference, kl_tokens) if kl_tokens is not None else None
        return KTOBatch(batch.tokens, batch.desirable, ref, kl_tokens, kl_ref)

    def loss(self, batch, models):
        o = self.options
        logratios = completion_logprobs(models.policy, batch.tokens) - batch.ref_logps
        z0 = 0.0
        if batch.kl_tokens is not None:
            with torch.no_grad():
                z0 = reference_point(completion_logprobs(models.policy, batch.kl_tokens), batch.kl_ref_logps)
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
