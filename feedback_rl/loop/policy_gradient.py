"""Policy-gradient math that GRPO and PPO share: the clipped surrogate and the correction for a
generation backend that scores tokens slightly differently from the trainer (vLLM above all).

The rollouts were sampled from the backend's distribution, the gradient assumes the trainer's:
truncated importance sampling reweights each token by ``min(exp(trainer - behaviour), cap)`` (TRL's
``vllm_importance_sampling_correction`` in ``token_truncate`` mode, cap = its ``clip_max``).
"""
from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from feedback_rl.modeling.batching import masked_mean
from feedback_rl.errors import UserError


def clipped_surrogate(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                      eps_low: float, eps_high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO-clip loss ``-min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)`` with ``r = exp(logp -
    old)``, and whether each token was clipped. ``advantages`` broadcasts: ``[B, 1]`` (one per sequence,
    GRPO) or ``[B, T]`` (per token, PPO)."""
    ratio = torch.exp(logps - old_logps)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * advantages
    return -torch.min(unclipped, clipped), (clipped < unclipped).float()


OVERLAP_IS_CAP = 3.0   # TRL's default vllm_importance_sampling_clip_max


def is_cap_option() -> Any:
    """The ``is_cap`` option, declared the same way by every optimizer that offers the correction."""
    return Field(None, gt=0.0, description="truncated importance sampling: weight each token's policy loss by "
                 "min(exp(trainer - backend log-prob), is_cap) (TRL's vllm_importance_sampling_correction, "
                 f"token_truncate); default off, {OVERLAP_IS_CAP} with rollout.overlap")


def effective_is_cap(cap: float | None, context: Any) -> float | None:
    """The cap an optimizer applies: its ``is_cap``; unset, ``OVERLAP_IS_CAP`` when its rollouts were
    sampled an update before they train (``rollout.overlap``), else none."""
    if cap is not None:
        return cap
    return OVERLAP_IS_CAP if getattr(context, "overlap", 0) else None


def truncated_is_weights(trainer_logps: torch.Tensor, behaviour_logps: torch.Tensor, mask: torch.Tensor,
                         cap: float) -> torch.Tensor:
    """Per-token ``min(exp(trainer - behaviour), cap)``, detached; 1 outside the mask."""
    w = torch.exp(trainer_logps - behaviour_logps).clamp(max=cap)
    return torch.where(mask > 0, w, torch.ones_like(w)).detach()


def mismatch_metrics(trainer_logps: torch.Tensor, behaviour_logps: torch.Tensor, mask: torch.Tensor) -> dict:
    """How far the backend's log-probs are from the trainer's: mean |trainer - behaviour| and mean
    untruncated ratio exp(trainer - behaviour) over completion tokens."""
    d = trainer_logps - behaviour_logps
    return {"rollout/logprob_mismatch": masked_mean(d.abs(), mask).item(),
            "rollout/is_ratio_mean": masked_mean(torch.exp(d), mask).item()}


def backend_correction(trainer_logps: torch.Tensor | None, behaviour_logps: torch.Tensor | None,
                       mask: torch.Tensor, cap: float | None, stage: str) -> tuple[torch.Tensor | None, dict]:
    """The IS weights (None when ``cap`` is off) and the mismatch gauges for one prepared batch.

    ``cap`` needs the backend's log-probs; rollouts without them are a user error (the setting cannot work)."""
    if cap is not None and behaviour_logps is None:
        raise UserError(f"stage '{stage}': optimizer.is_cap needs the backend's log-probs, and these rollouts "
                        "carry none")
    if trainer_logps is None or behaviour_logps is None:
        return None, {}
    weights = truncated_is_weights(trainer_logps, behaviour_logps, mask, cap) if cap is not None else None
    return weights, mismatch_metrics(trainer_logps, behaviour_logps, mask)
