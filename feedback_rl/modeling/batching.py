"""Batching and log-probs: the one place sequences are padded and scored token by token.

Training batches are right-padded; positions always come from the attention mask, so a
sequence scores the same whether it was padded left (generation) or right (training).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from feedback_rl.modeling import packing


@dataclass
class TokenBatch:
    """Prompt+completion sequences. ``completion_mask`` marks the completion tokens.

    A batch may hold episodes split over several sequences (a chat template that cannot be extended turn by
    turn): the first ``episodes`` rows are one per episode, each later segment follows them, ``owner[i]`` is the
    episode of row ``i`` and ``next_segment[i]`` the row that continues it (-1: none). Without splits both are
    None and every row is its own episode. :meth:`spread` gives an episode's value to each of its rows,
    :meth:`per_episode` sums rows into their episodes."""

    input_ids: torch.Tensor        # [B, T]
    attention_mask: torch.Tensor   # [B, T]
    completion_mask: torch.Tensor  # [B, T]
    owner: torch.Tensor | None = None         # [B] long: the episode each row belongs to
    next_segment: torch.Tensor | None = None  # [B] long: the row continuing this one's episode, -1 for none

    @property
    def target_mask(self) -> torch.Tensor:
        """Mask aligned with :func:`sequence_logprobs` output ([B, T-1]): completion targets."""
        return self.completion_mask[:, 1:].float()

    @property
    def episodes(self) -> int:
        """How many episodes the rows hold (the rows, unless an episode was split)."""
        return len(self) if self.owner is None else int(self.owner.max()) + 1

    def spread(self, per_episode: torch.Tensor) -> torch.Tensor:
        """``[episodes, ...]`` values to ``[B, ...]``: each row gets its episode's."""
        return per_episode if self.owner is None else per_episode[self.owner]

    def per_episode(self, per_row: torch.Tensor) -> torch.Tensor:
        """``[B]`` values summed into ``[episodes]`` (a split episode's segments together)."""
        if self.owner is None:
            return per_row
        return torch.zeros(self.episodes, dtype=per_row.dtype, device=per_row.device).index_add(0, self.owner, per_row)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: torch.Tensor | list[int]) -> "TokenBatch":
        """Some rows, as sequences of their own (a selection keeps no episode structure)."""
        return TokenBatch(self.input_ids[index], self.attention_mask[index], self.completion_mask[index])

    def to(self, device: Any) -> "TokenBatch":
        return TokenBatch(*(None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                            for f in fields(self)))


def pack(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int,
         completion_masks: list[list[int] | None] | None = None, max_length: int | None = None) -> TokenBatch:
    """Concatenate each prompt with its completion and right-pad to the longest.

    ``completion_masks`` marks, per completion token, whether it trains (None: every one does);
    ``max_length`` cuts each sequence's completion so prompt + completion fit (the prompt is kept)."""
    masks = completion_masks or [None] * len(prompt_ids)
    if max_length is not None:
        keep = [max(0, max_length - len(p)) for p in prompt_ids]
        completion_ids = [c[:k] for c, k in zip(completion_ids, keep)]
        masks = [m[:k] if m is not None else None for m, k in zip(masks, keep)]
    seqs = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids)]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    comp = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (p, s, m) in enumerate(zip(prompt_ids, seqs, masks)):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        attn[i, : len(s)] = 1
        comp[i, len(p): len(s)] = 1 if m is None else torch.tensor(m, dtype=torch.long)
    return TokenBatch(ids, attn, comp)


def rollout_batch(rollouts: list, tokenizer: Any, max_length: int | None = None) -> TokenBatch:
    """The sequences exactly as sampled (or as an offline row was encoded, once): no re-tokenization.
    The tokenizer only names the pad id."""
    return pack([r.prompt_ids for r in rollouts], [r.completion_ids for r in rollouts], pad_id(tokenizer),
                [r.completion_mask for r in rollouts], max_length)


def pair_batch(feedback: Any, tokenizer: Any, max_length: int | None = None) -> TokenBatch:
    """A :class:`PairFeedback`'s chosen rows stacked on its rejected rows: one forward scores both;
    :func:`split_pairs` takes the two halves of its per-row results apart."""
    return rollout_batch(list(feedback.chosen) + list(feedback.rejected), tokenizer, max_length)


def split_pairs(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The chosen and the rejected half of per-row values computed on a :func:`pair_batch`."""
    n = len(values) // 2
    return values[:n], values[n:]


def tokenize(tokenizer: Any, prompts: list, completions: list, add_eos: bool = True,
             max_length: int | None = None) -> TokenBatch:
    """Encode offline text (or conversation) pairs once, with the completion ending in EOS: for tests and
    the core's offline rows; generated text never comes through here (rollouts keep their ids)."""
    from feedback_rl.modeling.chat import encode_example
    enc = [encode_example(tokenizer, p, c, add_eos=add_eos) for p, c in zip(prompts, completions)]
    return pack([e.prompt_ids for e in enc], [e.completion_ids for e in enc], pad_id(tokenizer),
                [e.completion_mask for e in enc], max_length)


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
    if tokenizer is None:  # no tokenizer to ask: the attention mask, not the pad id, marks padding
        return 0
    pid = tokenizer.pad_token_id
    return pid if pid is not None else (tokenizer.eos_token_id or 0)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def forward_logits(model: torch.nn.Module, batch: TokenBatch, keep: torch.Tensor | None = None) -> torch.Tensor:
    """The model's logits, ``[B, T, V]``; with ``keep`` (bool ``[B, T]``) only those positions', ``[N, V]``.

    Under :func:`~feedback_rl.modeling.packing.padding_free` the model runs on packed rows where it can,
    and the logits come back in this same layout (zeros at padding)."""
    rows = packing.rows_for(model, _all_logits, batch.input_ids, batch.attention_mask)
    if rows is None:
        ids, mask, pos = batch.input_ids, batch.attention_mask, position_ids(batch.attention_mask)
    else:
        ids, mask, pos = rows.input_ids, None, rows.position_ids
        keep = None if keep is None else rows.gather(keep)
    extra = {} if keep is None else {"logits_to_keep": keep}
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, **extra).logits
    if keep is not None and logits.dim() == 3:  # a model that ignores logits_to_keep
        logits = logits[keep]
    if rows is None:
        return logits
    return rows.scatter(logits) if keep is None else logits[rows.order(keep)]


def _all_logits(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                position_ids: torch.Tensor) -> torch.Tensor:
    """What the packing probe compares: the logits at every position."""
    return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                 use_cache=False).logits


# per model class: whether its forward takes a boolean logits_to_keep (probed once, on a tiny input)
_KEEPS: dict[type, bool] = {}


def _takes_boolean_keep(model: torch.nn.Module, device: Any) -> bool:
    """Probe, once per model class, whether ``logits_to_keep`` (a boolean mask) works: a two-token input
    on the batch's device. Only this probe reads an error as "no ``logits_to_keep``"; a real batch's
    error (a device mismatch, out of memory) is never caught and mistaken for it."""
    kind = type(model)
    if kind not in _KEEPS:
        ids = torch.zeros((1, 2), dtype=torch.long, device=device)
        keep = torch.tensor([[True, False]], device=device)
        try:
            with torch.no_grad():
                out = model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=position_ids(torch.ones_like(ids)),
                            use_cache=False, logits_to_keep=keep).logits
            _KEEPS[kind] = out.dim() == 2 and out.shape[0] == 1
        except (TypeError, IndexError, RuntimeError):  # an older forward: int logits_to_keep, or none
            _KEEPS[kind] = False
    return _KEEPS[kind]


def _target_logits(model: torch.nn.Module, batch: TokenBatch, targets: torch.Tensor) -> torch.Tensor:
    """Logits ``[N, V]`` of the positions whose next token is a target (``targets``: bool ``[B, T-1]``).

    The LM head (and everything after it) runs on those positions alone: with chat prompts and a
    large vocabulary most of a sequence is prompt, whose logits nobody reads. transformers' boolean
    ``logits_to_keep`` slices the hidden states before the head, inside the model's own forward (so
    its softcapping or logit scaling applies, and wrappers such as DDP, FSDP and peft see a normal call).
    """
    keep = torch.zeros_like(batch.attention_mask, dtype=torch.bool)
    keep[:, :-1] = targets
    if _takes_boolean_keep(model, batch.input_ids.device):
        return forward_logits(model, batch, keep)
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
    """One log-probability per episode, ``[episodes]``: the sum over its completion tokens (EOS included),
    a split episode's segments together; without splits, one per sequence."""
    return batch.per_episode((sequence_logprobs(model, batch, temperature) * batch.target_mask).sum(-1))


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
