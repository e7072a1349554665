"""The one generation path. Every rollout in the project, for training or eval, comes from here.

Backends (HF ``generate``, vLLM) plug in underneath; this module repeats prompts into groups,
tags each rollout with its row, group and policy version, and decodes the text.
"""
from __future__ import annotations

from typing import Any

import torch

from .base import Backend, SamplingParams
from .types import Rollout


def generate_rollouts(backend: Backend, model: torch.nn.Module, tokenizer: Any, rows: list[dict],
                      sampling: SamplingParams, num_generations: int = 1, policy_version: int = 0,
                      batch_size: int | None = None) -> list[Rollout]:
    """``num_generations`` completions for each row; rollouts of one row share a ``group``."""
    prompts = [row["prompt"] for row in rows for _ in range(num_generations)]
    groups = [g for g in range(len(rows)) for _ in range(num_generations)]
    step = batch_size or len(prompts)
    was_training = model.training
    model.eval()
    gens = []
    with torch.no_grad():
        for start in range(0, len(prompts), step):
            gens += backend.generate(model, tokenizer, prompts[start: start + step], sampling)
    model.train(was_training)
    out = []
    for k, (g, gen) in enumerate(zip(groups, gens)):
        text = tokenizer.decode(gen.completion_ids, skip_special_tokens=True)
        out.append(Rollout(prompt=prompts[k], completion=text, row=rows[g], group=g,
                           prompt_ids=gen.prompt_ids, completion_ids=gen.completion_ids,
                           logprobs=gen.logprobs, truncated=gen.truncated,
                           policy_version=policy_version, uid=f"v{policy_version}-{k}"))
    return out
