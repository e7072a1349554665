"""The one generation path. Every rollout in the project, for training or eval, comes from here.

Prompts are rendered and tokenized once, here; backends (HF ``generate``, vLLM) plug in underneath and
see token ids only. This module repeats prompts into groups, cuts each completion at its first stop
token, tags each rollout with its row, group and policy version, and decodes the text (for logs and
judges: training reads the ids).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from feedback_rl.base import Backend, Generation, SamplingParams
from feedback_rl.modeling.chat import ids as text_ids, render_prompt
from feedback_rl.types import Rollout


def sampling_params(rollout: Any, greedy: bool = False, max_new_tokens: int | None = None) -> SamplingParams:
    """A stage's ``rollout:`` settings as the backend's :class:`SamplingParams`."""
    return SamplingParams(max_new_tokens=max_new_tokens or rollout.max_new_tokens, temperature=rollout.temperature,
                          top_p=rollout.top_p, top_k=rollout.top_k, greedy=greedy)


def stop_token_ids(tokenizer: Any, model: Any = None) -> list[int]:
    """Where a completion ends: the tokenizer's EOS and every EOS the model's generation config names
    (chat models often stop on an end-of-turn token too)."""
    ids = [tokenizer.eos_token_id]
    config = getattr(model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None)
    ids += extra if isinstance(extra, (list, tuple)) else [extra]
    return sorted({int(i) for i in ids if i is not None})


def cut_at_stop(gen: Generation, stops: list[int]) -> Generation:
    """The completion up to and including its first stop token; truncated when it has none."""
    ids = list(gen.completion_ids)
    end = next((k for k, t in enumerate(ids) if t in stops), None)
    n = len(ids) if end is None else end + 1
    lp = gen.logprobs.reshape(-1)[:n] if gen.logprobs is not None else None
    return Generation(list(gen.prompt_ids), ids[:n], lp, truncated=end is None)


@dataclass
class Prompts:
    """A batch's prompts rendered and tokenized once (the text for logs, the ids for the backend), each
    repeated ``num_generations`` times; rollouts of one row share a ``group``."""
    rows: list[dict]
    texts: list[str]
    ids: list[list[int]]        # one per rollout
    groups: list[int]           # the row each rollout answers


def encode_prompts(tokenizer: Any, rows: list[dict], num_generations: int = 1,
                   system_prompt: str | None = None) -> Prompts:
    texts = [render_prompt(tokenizer, row["prompt"], system_prompt, row.get("tools")) for row in rows]
    encoded = [text_ids(tokenizer, text) for text in texts]   # encode_prompt's ids; each prompt rendered once
    groups = [g for g in range(len(rows)) for _ in range(num_generations)]
    return Prompts(rows, texts, [encoded[g] for g in groups], groups)


def with_stops(sampling: SamplingParams, tokenizer: Any, model: Any) -> SamplingParams:
    """``sampling`` with its stop tokens filled in from the tokenizer and model when it names none."""
    return sampling if sampling.stop_token_ids else replace(sampling, stop_token_ids=stop_token_ids(tokenizer, model))


def run_backend(backend: Backend, model: torch.nn.Module, tokenizer: Any, prompt_ids: list[list[int]],
                sampling: SamplingParams, batch_size: int | None = None) -> list[Generation]:
    """The backend's generations for ``prompt_ids``, in chunks of ``batch_size``, the model in eval mode.

    A backend that holds its own weights (vLLM) never reads ``model``'s mode: the module is left alone,
    since under ``rollout.overlap`` this runs in a worker thread while the trainer uses it (dropout
    would depend on timing)."""
    step = batch_size or len(prompt_ids)
    flip = not backend.holds_weights
    was_training = model.training
    if flip:
        model.eval()
    gens = []
    try:
        with torch.no_grad():
            for start in range(0, len(prompt_ids), step):
                gens += backend.generate(model, tokenizer, prompt_ids[start: start + step], sampling)
    finally:
        if flip:
            model.train(was_training)
    return gens


def to_rollouts(prompts: Prompts, gens: list[Generation], tokenizer: Any, stops: list[int],
                policy_version: int) -> list[Rollout]:
    """Each generation cut at its first stop token, decoded (for logs and judges) and tagged."""
    out = []
    for k, (g, gen) in enumerate(zip(prompts.groups, gens)):
        gen = cut_at_stop(gen, stops)
        text = tokenizer.decode(gen.completion_ids, skip_special_tokens=True)
        out.append(Rollout(prompt=prompts.texts[g], completion=text, row=prompts.rows[g], group=g,
                           prompt_ids=gen.prompt_ids, completion_ids=gen.completion_ids,
                           logprobs=gen.logprobs, truncated=gen.truncated,
                           policy_version=policy_version, uid=f"v{policy_version}-{k}"))
    return out


def generate_rollouts(backend: Backend, model: torch.nn.Module, tokenizer: Any, rows: list[dict],
                      sampling: SamplingParams, num_generations: int = 1, policy_version: int = 0,
                      batch_size: int | None = None, system_prompt: str | None = None) -> list[Rollout]:
    """``num_generations`` completions for each row; rollouts of one row share a ``group``."""
    sampling = with_stops(sampling, tokenizer, model)
    prompts = encode_prompts(tokenizer, rows, num_generations, system_prompt)
    gens = run_backend(backend, model, tokenizer, prompts.ids, sampling, batch_size)
    return to_rollouts(prompts, gens, tokenizer, sampling.stop_token_ids, policy_version)
