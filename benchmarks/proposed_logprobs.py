"""A proposed change to ``feedback_rl.batching.sequence_logprobs``, measured here before the core takes it.

The core function runs the LM head on every position and a full-vocabulary ``log_softmax`` over
``[B, T, V]``, prompt positions included, though only completion targets are ever read (callers
multiply by ``target_mask``). TRL asks the model for the logits it needs (``logits_to_keep``). With
a large vocabulary (SmolLM2: 49,152) and short completions after a prompt, the head and the softmax
on prompt positions are most of the step. This version keeps the logits from the position before
the batch's first completion token on, and returns the same ``[B, T-1]`` tensor (zeros before it).

``trl_child.py --patch-logprobs`` swaps it in for the benchmark only; it is not project code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sequence_logprobs(model, batch, temperature: float = 1.0, with_entropy: bool = False):
    from feedback_rl.batching import position_ids
    comp = batch.completion_mask.bool()
    width = batch.input_ids.shape[1]
    rows = comp.any(1)
    first = int(comp.float().argmax(1)[rows].min()) if bool(rows.any()) else width - 1
    start = max(first - 1, 0)   # the logits at `start` predict the first completion token
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                position_ids=position_ids(batch.attention_mask), use_cache=False, logits_to_keep=width - start)
    logits = out.logits[:, :-1].float()
    if temperature != 1.0:
        logits = logits / temperature
    targets = batch.input_ids[:, start + 1:].unsqueeze(-1)
    logp_all = F.log_softmax(logits, dim=-1)
    logps = F.pad(logp_all.gather(-1, targets).squeeze(-1), (start, 0))
    if not with_entropy:
        return logps
    entropy = F.pad(-(logp_all.exp() * logp_all).sum(-1), (start, 0))
    return logps, entropy


def install() -> None:
    """Swap the proposal in everywhere the core function was imported by name."""
    import feedback_rl
    import feedback_rl.batching as batching
    import frl_plugins.optimizers.grpo as grpo
    for module in (feedback_rl, batching, grpo):
        module.sequence_logprobs = sequence_logprobs
