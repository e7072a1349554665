"""Held-out evaluation: greedy completions of eval prompts, scored by the eval sources."""
from __future__ import annotations

from typing import Any

from feedback_rl.base import Backend, SamplingParams
from feedback_rl.loop.rewards import Mixer
from feedback_rl.loop.rollout import generate_rollouts


def evaluate(backend: Backend, model: Any, tokenizer: Any, rows: list[dict], mixer: Mixer,
             max_new_tokens: int, batch_size: int, system_prompt: str | None = None) -> dict[str, float]:
    """``eval/<source>`` is each source's mean score (for a 0/1 checker: the exact-match rate)."""
    if not rows or not mixer.slots:
        return {}
    sampling = SamplingParams(max_new_tokens=max_new_tokens, greedy=True)
    rollouts = generate_rollouts(backend, model, tokenizer, rows, sampling, batch_size=batch_size,
                                 system_prompt=system_prompt)
    scored, metrics = mixer.score(rollouts, prefix="eval")
    out = {k.removesuffix("/mean"): v for k, v in metrics.items() if k.endswith("/mean")}
    out["eval/reward"] = out.pop("eval")
    out.update({k: v for k, v in metrics.items() if k.endswith("/error_rate") and v > 0})
    out["eval/completion_len"] = sum(len(r.completion_ids) for r in rollouts) / len(rollouts)
    return out
