"""The batch an optimizer receives: one step's feedback as tensors on the policy's device.

The engine builds it once per step (``build``), so every optimizer gets the same thing: token ids packed
exactly as sampled (or as offline rows were encoded), the per-row values of the feedback shape, each row's
behaviour log-probs and policy version, and, for an optimizer that declares ``importance_weighted``, the
trainer's log-probs before the update and the truncated importance weights against the behaviour
log-probs, computed row by row. Devices and importance weights live here and nowhere else: an optimizer
plugin never moves a tensor, and never calls an importance helper.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from feedback_rl.loop import importance
from feedback_rl.modeling.batching import TokenBatch, pad_id, pack, sequence_logprobs
from feedback_rl.types import BinaryFeedback, Feedback, PairFeedback, Rollout, ScalarFeedback


@dataclass
class Batch:
    """One step's feedback on the policy's device. Row ``i`` is ``rollouts[i]``; for pairs the chosen
    rows come first, then the rejected ones (``feedback_rl.modeling.batching.split_pairs`` takes them apart).

    Per-row tensors are ``[N]`` (N = ``len(rollouts)``); per-token ones ``[B, T-1]``, aligned with
    :func:`~feedback_rl.modeling.batching.sequence_logprobs` and ``tokens.target_mask``. B is N unless an
    episode was split (``Rollout.segments``) and the optimizer ``trains_segments``: then ``tokens`` holds each
    later segment after the N rows, and ``tokens.spread`` / ``tokens.per_episode`` map between the two."""

    feedback: Feedback
    rollouts: list[Rollout]
    tokens: TokenBatch
    device: torch.device
    temperature: float = 1.0
    pad_id: int = 0
    versions: torch.Tensor | None = None       # [N] long: the policy version that sampled each row (-1: offline)
    truncated: torch.Tensor | None = None      # [N] bool: cut at max_new_tokens
    rewards: torch.Tensor | None = None        # [N] scalar feedback
    groups: torch.Tensor | None = None         # [N] scalar feedback: the prompt group of each row
    desirable: torch.Tensor | None = None      # [N] binary feedback
    margins: torch.Tensor | None = None        # [pairs] pair feedback
    behaviour: torch.Tensor | None = None      # [B, T-1] the backend's log-probs (0 where a sequence has none)
    has_behaviour: torch.Tensor | None = None  # [B] bool
    old_logps: torch.Tensor | None = None      # [B, T-1] the trainer's log-probs before this update (no grad)
    is_weights: torch.Tensor | None = None     # [B, T-1] min(exp(old - behaviour), cap); 1 on rows without behaviour
    metrics: dict[str, float] = field(default_factory=dict)  # the core's gauges of this batch, logged with the step

    def __len__(self) -> int:
        return len(self.feedback)

    def pack(self, rollouts: list[Rollout], max_length: int | None = None) -> TokenBatch:
        """More sequences on this batch's device (e.g. KTO's mismatched pairs), packed as ``tokens`` was."""
        return pack_on(rollouts, self.pad_id, self.device, max_length)


def rows_of(feedback: Feedback) -> list[Rollout]:
    """The sequences a feedback trains on, in batch order (pairs: chosen, then rejected)."""
    if isinstance(feedback, PairFeedback):
        return list(feedback.chosen) + list(feedback.rejected)
    return list(feedback.rollouts)


def pack_on(rollouts: list[Rollout], pad: int, device: Any, max_length: int | None = None) -> TokenBatch:
    """Rollouts' ids exactly as sampled (or encoded once), right-padded, on ``device``."""
    return pack([r.prompt_ids for r in rollouts], [r.completion_ids for r in rollouts], pad,
                [r.completion_mask for r in rollouts], max_length).to(device)


def with_segments(rows: list[Rollout]) -> tuple[list[Rollout], list[int], list[int]]:
    """The sequences that train ``rows``: the rows, then every later segment of a split episode; each
    sequence's row (its episode), and the sequence continuing it (-1: none)."""
    seqs, owner, following = list(rows), list(range(len(rows))), [-1] * len(rows)
    for i, r in enumerate(rows):
        prev = i
        for seg in r.segments:
            following[prev] = prev = len(seqs)
            seqs.append(seg)
            owner.append(i)
            following.append(-1)
    return seqs, owner, following


def pack_episodes(rows: list[Rollout], pad: int, device: Any, max_length: int | None = None
                  ) -> tuple[TokenBatch, list[Rollout]]:
    """``rows`` with their episodes' later segments, packed (``TokenBatch.owner`` says whose each is), and
    the sequences in pack order. Without a split episode, just ``rows`` packed."""
    seqs, owner, following = with_segments(rows)
    tokens = pack_on(seqs, pad, device, max_length)
    if len(seqs) > len(rows):
        tokens.owner = torch.tensor(owner, dtype=torch.long, device=device)
        tokens.next_segment = torch.tensor(following, dtype=torch.long, device=device)
    return tokens, seqs


def place_behaviour(rollouts: list[Rollout], tokens: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's behaviour log-probs laid out like ``sequence_logprobs`` (``[B, T-1]``): completion token j
    of row i predicted at position ``len(prompt) - 1 + j``; and which rows carry them. ``Rollout.logprobs``
    holds one value per completion token (a masked token's value is never read); a completion cut by
    ``max_length`` keeps the first ones."""
    mask = tokens.target_mask
    out = torch.zeros(mask.shape, dtype=torch.float32)
    has = torch.zeros(len(rollouts), dtype=torch.bool)
    for i, r in enumerate(rollouts):
        if r.logprobs is None or not r.completion_ids:
            continue
        lp = r.logprobs.reshape(-1).float().cpu()
        if len(lp) != len(r.completion_ids):
            raise ValueError(f"rollout {r.uid or i}: {len(lp)} behaviour log-probs for "
                             f"{len(r.completion_ids)} completion tokens")
        start = len(r.prompt_ids) - 1
        n = min(len(lp), mask.shape[1] - start)
        out[i, start: start + n] = lp[:n]
        has[i] = True
    return out.to(mask.device) * mask, has.to(mask.device)


def _per_row(feedback: Feedback, rows: list[Rollout], device: Any) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {
        "versions": torch.tensor([r.policy_version for r in rows], dtype=torch.long, device=device),
        "truncated": torch.tensor([bool(r.truncated) for r in rows], dtype=torch.bool, device=device)}
    if isinstance(feedback, ScalarFeedback):
        out["rewards"] = feedback.rewards.to(device=device, dtype=torch.float32)
        out["groups"] = torch.tensor([r.group for r in rows], dtype=torch.long, device=device)
    elif isinstance(feedback, BinaryFeedback):
        out["desirable"] = torch.tensor(list(feedback.desirable), dtype=torch.bool, device=device)
    elif isinstance(feedback, PairFeedback):
        margins = feedback.margins or [0.0] * len(feedback)
        out["margins"] = torch.tensor(margins, dtype=torch.float32, device=device)
    return out


def build(feedback: Feedback, policy: torch.nn.Module, tokenizer: Any, *, max_length: int | None = None,
          temperature: float = 1.0, old_logprobs: bool = False, importance_weighted: bool = False,
          is_cap: float | None = None, log_mismatch: bool = False, version: int = 0,
          segments: bool = True) -> Batch:
    """The batch of ``feedback`` on ``policy``'s device.

    ``old_logprobs``: the optimizer reads the trainer's log-probs before the update (PPO; GRPO with several
    passes). ``importance_weighted`` with ``is_cap``: the weights, computed from those log-probs (one
    no-grad forward, shared with ``old_logprobs``). ``log_mismatch``: the trainer-vs-behaviour gauges.
    ``segments``: a split episode's later segments train too (the optimizer ``trains_segments``); otherwise
    only its first, and ``env/segments_untrained`` counts the rest."""
    device = next(policy.parameters()).device
    rows = rows_of(feedback)
    pad = pad_id(tokenizer)
    later = sum(len(r.segments) for r in rows)
    if segments:
        tokens, seqs = pack_episodes(rows, pad, device, max_length)
    else:
        tokens, seqs = pack_on(rows, pad, device, max_length), rows
    batch = Batch(feedback, rows, tokens, device, temperature, pad_id=pad, **_per_row(feedback, rows, device))
    if later:
        batch.metrics["env/segments_trained" if segments else "env/segments_untrained"] = float(later)
    batch.behaviour, batch.has_behaviour = place_behaviour(seqs, tokens)
    weigh = importance_weighted and is_cap is not None
    compare = (weigh or log_mismatch) and bool(batch.has_behaviour.any())
    if old_logprobs or compare:
        with torch.no_grad():
            batch.old_logps = sequence_logprobs(policy, tokens, temperature)
    mask = tokens.target_mask
    sampled = mask * batch.has_behaviour.unsqueeze(-1)   # tokens with behaviour log-probs to compare
    if compare:
        batch.metrics.update(importance.mismatch_metrics(batch.old_logps, batch.behaviour, sampled))
    if weigh:
        if batch.has_behaviour.any():
            batch.is_weights = importance.truncated_weights(batch.old_logps, batch.behaviour, sampled, is_cap)
        else:
            batch.is_weights = torch.ones_like(mask)
        missing = int((~batch.has_behaviour).sum())
        batch.metrics["importance/rows_without_behaviour"] = float(missing)
        if bool(sampled.any()):
            batch.metrics["importance/weight_mean"] = float((batch.is_weights * sampled).sum() / sampled.sum())
    live = batch.versions >= 0
    if importance_weighted and bool(live.any()):
        batch.metrics["rollout/staleness_max"] = float((version - batch.versions[live]).max())
    if not old_logprobs and not weigh:
        batch.old_logps = None   # computed for the gauges only: the optimizer did not ask for it
    return batch


def for_optimizer(optimizer: Any, feedback: Feedback, models: Any, version: int = 0) -> Batch:
    """The batch the engine hands ``optimizer`` (its max length, temperature, old log-probs and importance
    weights as its stage asks); tests and scripts build one the same way."""
    ctx = optimizer.context
    sampling = getattr(ctx, "sampling", None)
    return build(feedback, models.policy, models.tokenizer, max_length=optimizer.max_length(),
                 temperature=sampling.temperature if sampling is not None else 1.0,
                 old_logprobs=optimizer.old_logprobs(), importance_weighted=optimizer.importance_weighted,
                 is_cap=importance.effective_cap(getattr(ctx, "is_cap", None), getattr(ctx, "overlap", 0)),
                 log_mismatch=getattr(ctx, "logprob_mismatch", False), version=version,
                 segments=optimizer.trains_segments)
