"""Held-out evaluation: greedy completions of eval prompts, scored by the eval sources.

A stage with an environment is evaluated on episodes: one greedy episode per eval row, played against the
stage's environment by the same path training plays (loop/episodes.py), so ``eval/<source>`` scores what the
episodes earned and ``eval/env/...`` says how they went (turns, tool calls, how many ended done).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from feedback_rl.base import Backend, Environment, SamplingParams
from feedback_rl.loop.episodes import play_episodes
from feedback_rl.loop.rewards import Mixer
from feedback_rl.loop.rollout import generate_rollouts


@dataclass(frozen=True)
class EpisodeEval:
    """What an eval of episodes needs besides the rows: the stage's environment and its limits."""

    environment: Environment
    max_turns: int
    context: int
    seed: int


def evaluate(backend: Backend, model: Any, tokenizer: Any, rows: list[dict], mixer: Mixer,
             max_new_tokens: int, batch_size: int, system_prompt: str | None = None,
             episodes: EpisodeEval | None = None) -> dict[str, float]:
    """``eval/<source>`` is each source's mean score (for a 0/1 checker: the exact-match rate); with
    ``episodes``, the ``env/`` metrics of the eval's episodes too, as ``eval/env/...``."""
    if not rows or not mixer.slots:
        return {}
    sampling = SamplingParams(max_new_tokens=max_new_tokens, greedy=True)
    env_metrics: dict[str, float] = {}
    if episodes is None:
        rollouts = generate_rollouts(backend, model, tokenizer, rows, sampling, batch_size=batch_size,
                                     system_prompt=system_prompt)
    else:
        rollouts, env_metrics = _play(backend, model, tokenizer, rows, sampling, batch_size, system_prompt, episodes)
    scored, metrics = mixer.score(rollouts, prefix="eval")
    out = {k.removesuffix("/mean"): v for k, v in metrics.items() if k.endswith("/mean")}
    out["eval/reward"] = out.pop("eval")
    out.update({k: v for k, v in metrics.items() if k.endswith("/error_rate") and v > 0})
    out["eval/completion_len"] = sum(len(r.completion_ids) for r in rollouts) / len(rollouts)
    out.update({f"eval/{k}": v for k, v in env_metrics.items()})
    return out


def _play(backend: Backend, model: Any, tokenizer: Any, rows: list[dict], sampling: SamplingParams, batch_size: int,
          system_prompt: str | None, ep: EpisodeEval) -> tuple[list, dict[str, float]]:
    """One greedy episode per row, ``batch_size`` rows played together; the metrics averaged over all episodes
    (each batch's are means over its episodes, or counts: both weigh by the batch's size)."""
    rollouts, sums = [], {}
    for start in range(0, len(rows), batch_size):
        chunk = rows[start: start + batch_size]
        got, metrics = play_episodes(backend, model, tokenizer, ep.environment, chunk, sampling, 1, ep.max_turns,
                                     ep.context, seed=ep.seed + start, system_prompt=system_prompt)
        rollouts += got
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + v * (len(chunk) if not _is_count(k) else 1)
    return rollouts, {k: v / (len(rows) if not _is_count(k) else 1) for k, v in sums.items()}


def _is_count(key: str) -> bool:
    """``env/errors`` and ``env/bridge_fallbacks`` count episodes; the other ``env/`` metrics are means."""
    return key in ("env/errors", "env/bridge_fallbacks")
