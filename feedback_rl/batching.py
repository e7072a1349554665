"""Batching and log-probs: the one place sequences are padded and scored token by token.

Training batches are right-padded; positions always come from the attention mask, so a
sequence scores the same whether it was padded left (generation) or right (training).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F


@dataclass
class TokenBatch:
    """Prompt+completion sequences. ``completion_mask`` marks the completion tokens."""

    input_ids: torch.Tensor        # [B, T]
    attention_mask: torch.Tensor   # [B, T]
    completion_mask: torch.Tensor  # [B, T]

    @property
    def target_mask(self) -> torch.Tensor:
        """Mask aligned with :func:`sequence_logprobs` output ([B, T-1]): completion targets."""
        return self.completion_mask[:, 1:].float()

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: torch.Tensor | list[int]) -> "TokenBatch":
        return TokenBatch(*(getattr(self, f.name)[index] for f in fields(self)))

    def to(self, device: Any) -> "TokenBatch":
        return TokenBatch(*(getattr(self, f.name).to(device) for f in fields(self)))


def pack(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int) -> TokenBatch:
    """Concatenate each prompt with its completion and right-pad to the longest."""
    seqs = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids)]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    comp = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (p, s) in enumerate(zip(prompt_ids, seqs)):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        attn[i, : len(s)] = 1
        comp[i, len(p): len(s)] = 1
    return TokenBatch(ids, attn, comp)


def tokenize(tokenizer: Any, prompts: list[str], completions: list[str], add_eos: bool = True,
             max_length: int | None = None) -> TokenBatch:
    """Tokenize text pairs; the completion ends with EOS so the model learns to stop."""
    p_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    c_ids = []
    for c in completions:
        ids = tokenizer(c, add_special_tokens=False)["input_ids"]
        if add_eos and tokenizer.eos_token_id is not None:
            ids = ids + [tokenizer.eos_token_id]
        c_ids.append(ids)
    if max_length is not None:
        c_ids = [c[: max(0, max_length - len(p))] for p, c in zip(p_ids, c_ids)]
    return pack(p_ids, c_ids, pad_id(tokenizer))


def tokenize_rollouts(rollouts: list, tokenizer: Any) -> TokenBatch:
    """Rollouts keep their generated token ids: no re-tokenization, no mismatch."""
    return pack([r.prompt_ids for r in rollouts], [r.completion_ids for r in rollouts], pad_id(tokenizer))


def behaviour_logprobs(rollouts: list, batch: TokenBatch) -> torch.Tensor | None:
    """The backend's per-token log-probs laid out like :func:`sequence_logprobs` (``[B, T-1]``):
    completion token j of row i sits at the j-th position of ``batch.target_mask[i]``, zeros elsewhere.

    None when a rollout with a non-empty completion carries no log-probs (nothing to compare with).
    """
    mask = batch.target_mask
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    for i, r in enumerate(rollouts):
        where = mask[i].nonzero().squeeze(-1)
        if not len(where):
            continue
        if r.logprobs is None:
            return None
        lp = r.logprobs.reshape(-1)
        if len(lp) != len(where):
            raise ValueError(f"rollout {r.uid or i}: {len(lp)} behaviour log-probs for {len(where)} completion tokens")
        out[i, where] = lp.to(out)
    return out


def pad_id(tokenizer: Any) -> int:
    pid = tokenizer.pad_token_id
    return pid if pid is not None else (tokenizer.eos_token_id or 0)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def forward_logits(model: torch.nn.Module, batch: TokenBatch, keep: torch.Tensor | None = None) -> torch.Tensor:
    """The model's logits, ``[B, T, V]``; with ``keep`` (bool ``[B, T]``) only those positions', ``[N, V]``."""
    extra = {} if keep is None else {"logits_to_keep": keep}
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                position_ids=position_ids(batch.attention_mask), use_cache=False, **extra)
    if keep is not None and out.logits.dim() == 3:  # a model that ignores logits_to_keep
        return out.logits[keep]
    return out.logits


# model classes whose forward refused a boolean logits_to_keep (older transformers, custom code)
_FULL_HEAD: set[type] = set()


def _target_logits(model: torch.nn.Module, batch: TokenBatch, targets: torch.Tensor) -> torch.Tensor:
    """Logits ``[N, V]`` of the positions whose next token is a target (``targets``: bool ``[B, T-1]``).

    The LM head (and everything after it) runs on those positions alone: with chat prompts and a
    large vocabulary most of a sequence is prompt, whose logits nobody reads. transformers' boolean
    ``logits_to_keep`` slices the hidden states before the head, inside the model's own forward (so
    its softcapping or logit scaling applies, and wrappers such as DDP, FSDP and peft see a normal call).
    """
    keep = torch.zeros_like(batch.attention_mask, dtype=torch.bool)
    keep[:, :-1] = targets
    kind = type(model)
    if kind not in _FULL_HEAD:
        try:
            return forward_logits(model, batch, keep)
        except (TypeError, IndexError, RuntimeError):
            _FULL_HEAD.add(kind)
    return forward_logits(model, batch)[keep]


def sequence_logprobs(model: torch.nn.Module, batch: TokenBatch, temperature: float = 1.0,
                      with_entropy: bool = False):
    """Log-probability of each next token, ``[B, T-1]``, float32; multiply by ``batch.target_mask``.

    Computed at completion targets only (``batch.target_mask``); 0 elsewhere. With ``with_entropy``
    also returns the per-token entropy of the (tempered) distribution, likewise.
    """
    targets = batch.completion_mask[:, 1:].bool()
    logits = _target_logits(model, batch, targets)
    # log-softmax in float32 even under autocast: log-probs, ratios and losses are fp32
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits = logits.float()
        if temperature != 1.0:
            logits = logits / temperature
        logp_all = F.log_softmax(logits, dim=-1)
        picked = logp_all.gather(-1, batch.input_ids[:, 1:][targets].unsqueeze(-1)).squeeze(-1)
        logps = picked.new_zeros(targets.shape).masked_scatter(targets, picked)
        if not with_entropy:
            return logps
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        return logps, entropy.new_zeros(targets.shape).masked_scatter(targets, entropy)


def completion_logprobs(model: torch.nn.Module, batch: TokenBatch, temperature: float = 1.0) -> torch.Tensor:
    """One log-probability per sequence, ``[B]``: the sum over its completion tokens (EOS included)."""
    return (sequence_logprobs(model, batch, temperature) * batch.target_mask).sum(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` is 1; 0 where the mask is empty (never NaN)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    return out if shift_mean else out + mean


def truncated_is_weights(trainer_logps: torch.Tensor, behaviour_logps: torch.Tensor, mask: torch.Tensor,
                         cap: float) -> torch.Tensor:
    """Per-token ``min(exp(trainer - behaviour), cap)``, detached; 1 outside the mask.

    The rollouts were sampled from the backend's distribution, the gradient assumes the trainer's:
    the weight reweights each token towards the trainer's, truncated so one token cannot dominate.
    """
    w = torch.exp(trainer_logps - behaviour_logps).clamp(max=cap)
    return torch.where(mask > 0, w, torch.ones_like(w)).detach()


def mismatch_metrics(trainer_logps: torch.Tensor, behaviour_logps: torch.Tensor, mask: torch.Tensor) -> dict:
    """How far the backend's log-probs are from the trainer's: mean |trainer - behaviour| and mean
    untruncated ratio exp(trainer - behaviour) over completion tokens."""
    d = trainer_logps - behaviour_logps
    return {"rollout/logprob_mismatch": masked_mean(d.abs(), mask).item(),
            "rollout/is_ratio_mean": masked_mean(torch.exp(d), mask).item()}
