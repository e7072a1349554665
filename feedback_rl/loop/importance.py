"""Importance weights: the correction for rollouts sampled from another distribution than the one trained.

Rollouts are sampled by the backend (vLLM scores tokens slightly differently from the trainer), possibly
an update or more before they train (``rollout.overlap``, a person's late rating). The gradient assumes
the trainer's distribution before this update; truncated importance sampling reweights each sampled
token by ``min(exp(trainer - behaviour), cap)`` (TRL's ``vllm_importance_sampling_correction`` in
``token_truncate`` mode, cap = its ``clip_max``).

The core computes the weights once per batch, row by row: a row without behaviour log-probs (an item
imported from a file, an offline row) keeps weight 1 and is counted, so one such row never disables the
correction for the others. Only optimizers that declare ``importance_weighted`` receive them.
"""
from __future__ import annotations

import torch

from feedback_rl.modeling.batching import masked_mean

OVERLAP_IS_CAP = 3.0   # TRL's default vllm_importance_sampling_clip_max


def effective_cap(cap: float | None, overlap: int) -> float | None:
    """The cap applied: the recipe's ``rollout.is_cap``; unset, ``OVERLAP_IS_CAP`` when rollouts train an
    update after they were sampled (``rollout.overlap``), else none."""
    if cap is not None:
        return cap
    return OVERLAP_IS_CAP if overlap else None


def truncated_weights(trainer_logps: torch.Tensor, behaviour_logps: torch.Tensor, mask: torch.Tensor,
                      cap: float) -> torch.Tensor:
    """Per-token ``min(exp(trainer - behaviour), cap)``, detached; 1 where ``mask`` is 0."""
    w = torch.exp(trainer_logps - behaviour_logps).clamp(max=cap)
    return torch.where(mask > 0, w, torch.ones_like(w)).detach()


def mismatch_metrics(trainer_logps: torch.Tensor, behaviour_logps: torch.Tensor, mask: torch.Tensor) -> dict:
    """How far the behaviour log-probs are from the trainer's: mean |trainer - behaviour| and the mean
    untruncated ratio exp(trainer - behaviour) over the tokens in ``mask``."""
    if not bool(mask.any()):
        return {}
    d = trainer_logps - behaviour_logps
    return {"rollout/logprob_mismatch": masked_mean(d.abs(), mask).item(),
            "rollout/is_ratio_mean": masked_mean(torch.exp(d), mask).item()}
