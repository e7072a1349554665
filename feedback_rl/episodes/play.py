"""One episode played at the level of messages, against a function that writes the assistant's turns.

The reference for what the core's batched episode loop does with tokens (docs/episodes.md), and how environments
are tested with scripted turns: open the episode from a row, answer each assistant turn, stop when the
environment says done or truncated, or after ``max_turns`` turns (truncated). An environment that raises ends the
episode with ``error`` set: the episode scores ``error``, never a zero.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from feedback_rl.base import Environment


@dataclass
class Transcript:
    """What one episode did: every turn (the opening ones first), each assistant turn's step reward and the
    environment's ``info``, and how it ended."""

    messages: list[dict[str, Any]]
    tools: list[Any] = field(default_factory=list)
    rewards: list[float | None] = field(default_factory=list)
    infos: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    truncated: bool = False
    error: str | None = None

    @property
    def turns(self) -> int:
        return len(self.rewards)


def play(environment: Environment, row: dict[str, Any], respond: Callable[[list[dict[str, Any]]], str],
         seed: int = 0, episode_id: str = "0", max_turns: int | None = None) -> Transcript:
    """Play one episode: ``respond(messages)`` returns the next assistant turn's text."""
    limit = max_turns or getattr(environment.options, "max_turns", None) or 8
    try:
        episode = environment.reset(row, seed=seed, episode_id=episode_id)
    except Exception as e:  # noqa: BLE001 - any failure of the environment is the episode's error
        return Transcript([], error=f"reset: {type(e).__name__}: {e}")
    out = Transcript(list(episode.messages), list(episode.tools))
    try:
        while out.turns < limit:
            message = {"role": "assistant", "content": respond(list(out.messages))}
            out.messages.append(message)
            try:
                reply = episode.step(message)
            except Exception as e:  # noqa: BLE001
                out.rewards.append(None)
                out.error = f"step {out.turns}: {type(e).__name__}: {e}"
                return out
            out.rewards.append(reply.reward)
            out.infos.append(reply.info)
            out.done, out.truncated = reply.done, reply.truncated
            if reply.done or reply.truncated:
                return out
            out.messages += reply.messages
        out.truncated = True
        return out
    finally:
        episode.close()
