"""Any agent program through an OpenAI-compatible endpoint: during a step the core serves the live policy on
loopback and records every call's token ids by session (docs/episodes.md, "Any agent program").

The stage's ``agent: agents.py:solve`` is called as ``solve(row, client)`` for each row x ``num_generations``,
all at once (threads; an ``async def`` agent runs on one event loop with ``openai.AsyncOpenAI``), each with an
official ``openai`` client whose ``X-Session-ID`` header names its episode. The server is the one ``frl serve``
uses (``serving/app.py``); what generates is ``loop/endpoint.py: RolloutEndpoint``, on the trainer's thread,
through the core's one generation path. Each session's calls extend one append-only token sequence
(``serving/sessions.py``); each episode becomes a Rollout built as an environment episode's is
(``loop/episodes.py: episode_rollout``), its reward the number the agent returned (the last turn's step reward:
score it with ``{type: environment}``). An agent that raises, returns no number or runs past ``timeout_s`` has
an error, never a zero.
"""
from __future__ import annotations

import asyncio
import inspect
import math
import threading
import time
from typing import Any, Callable

import torch

from feedback_rl.base import Backend, SamplingParams
from feedback_rl.episodes.tokens import EpisodeTokens
from feedback_rl.loop.endpoint import RolloutEndpoint
from feedback_rl.loop.episodes import episode_metrics, episode_rollout
from feedback_rl.modeling.chat import prompt_turns
from feedback_rl.serving.app import ServerThread, build_app
from feedback_rl.serving.protocol import SESSION_HEADER
from feedback_rl.serving.sessions import Session
from feedback_rl.types import Rollout

class AgentEpisode:
    """One agent call: its session's tokens, and how it ended (the fields ``episode_rollout`` reads)."""

    def __init__(self, k: int, group: int, row: dict, sid: str, tokenizer: Any, stops: set[int]):
        self.k, self.group, self.row, self.sid = k, group, row, sid
        self.session = Session(tokenizer, stops)
        self.tokenizer = tokenizer
        self.infos: list[dict] = []
        self.done = self.truncated = self.finished = False
        self.error: str | None = None
        self.end: str | None = None   # why it ended, one of loop/episodes.py's ENDS (episode["end"], env/end/*)
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self._empty: EpisodeTokens | None = None

    @property
    def tokens(self) -> EpisodeTokens:
        """The session's tokens; an agent that never called the model has its row's prompt alone."""
        if self.session.tokens is not None:
            return self.session.tokens
        if self._empty is None:
            prompt = self.row.get("prompt")
            turns = prompt_turns(prompt) if isinstance(prompt, (str, list)) and prompt else [
                {"role": "user", "content": ""}]
            self._empty = EpisodeTokens(self.tokenizer, turns, stop_ids=self.session.stop_ids)
        return self._empty

    @property
    def opening(self) -> int:
        return self.session.opening if self.session.tokens is not None else len(self.tokens.messages)

    @property
    def offered(self) -> str:
        return self.session.offered

    def returned(self, value: Any) -> None:
        """The agent returned ``value``: the episode's reward, given to its last turn."""
        with self.lock:
            if self.finished:
                return
            self.finished = True
            if self.session.tokens is None or not self.session.tokens.turns:
                self.error, self.end = "the agent never called the model", "error"
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                self.error, self.end = f"the agent returned {value!r}, not a finite number", "error"
            else:
                self.session.tokens.set_reward(float(value))
                self.done, self.end = True, "done"

    def fail(self, message: str, truncated: bool = False) -> None:
        """The agent raised, or ran out of time (``truncated``)."""
        with self.lock:
            if not self.finished:
                self.finished, self.error, self.truncated = True, message, truncated
                self.end = "max_seconds" if truncated else "error"


class AgentRunner:
    """A stage's agent: the endpoint, started on 127.0.0.1 (a free port) at the stage's first step and stopped
    by :meth:`close` (the stage's end, an error, Ctrl-C)."""

    def __init__(self, agent: Callable[..., Any], backend: Backend, model: torch.nn.Module, tokenizer: Any,
                 sampling: SamplingParams, context: int, timeout_s: float, wait_s: float):
        self.agent, self.timeout_s, self.tokenizer = agent, timeout_s, tokenizer
        self.endpoint = RolloutEndpoint(backend, model, tokenizer, sampling, context, wait_s)
        self.server: ServerThread | None = None
        self.context = context

    @property
    def url(self) -> str:
        if self.server is None:
            app = build_app(self.endpoint, self.tokenizer, None, limit=self.context)   # any model name: the policy
            self.server = ServerThread(app).__enter__()
        return self.server.url

    def play(self, rows: list[dict], num_generations: int, version: int) -> tuple[list[Rollout], dict[str, float]]:
        """``num_generations`` agent episodes of each row, run together; their rollouts (in row order, those of
        one row sharing a ``group``) and the step's ``env/`` metrics."""
        url, ep_ids = self.url, [g for g in range(len(rows)) for _ in range(num_generations)]
        episodes = [AgentEpisode(k, g, rows[g], f"v{version}-{k}", self.tokenizer, self.endpoint.stops)
                    for k, g in enumerate(ep_ids)]
        self.endpoint.episodes = {ep.sid: ep for ep in episodes}
        batches = self.endpoint.stats["batches"]
        _start(self.agent, episodes, url, self.timeout_s)
        try:
            self.endpoint.serve(episodes, self.timeout_s)
        finally:
            for ep in episodes:
                ep.fail("the step ended before the agent did")   # late calls are refused from here on
            self.endpoint.episodes = {}
        rollouts = [episode_rollout(ep, self.tokenizer, version) for ep in episodes]
        metrics = episode_metrics(episodes)
        n = max(1, len(episodes))
        metrics.update({"env/agent_calls_mean": sum(ep.session.calls for ep in episodes) / n,
                        "env/agent_splits": float(sum(ep.session.splits for ep in episodes)),
                        "env/agent_backend_calls": float(self.endpoint.stats["batches"] - batches)})
        return rollouts, metrics

    def close(self) -> None:
        if self.server is not None:
            self.server.__exit__(None, None, None)
            self.server = None


def _start(agent: Callable[..., Any], episodes: list[AgentEpisode], url: str, timeout_s: float) -> None:
    """Each episode's agent call, started: a daemon thread each (a stuck agent cannot hold the process), or
    one event loop for an ``async def`` agent."""
    import openai

    def headers(ep: AgentEpisode) -> dict:
        return {"base_url": url, "api_key": "frl-rollout", "default_headers": {SESSION_HEADER: ep.sid},
                "max_retries": 0, "timeout": timeout_s}

    if inspect.iscoroutinefunction(agent):
        async def one(ep: AgentEpisode) -> None:
            client = openai.AsyncOpenAI(**headers(ep))
            try:
                ep.returned(await asyncio.wait_for(agent(dict(ep.row), client), timeout_s))
            except asyncio.TimeoutError:
                ep.fail(f"the agent ran past agent.timeout_s ({timeout_s:g} s)", truncated=True)
            except BaseException as e:  # noqa: BLE001 - the agent's failure is its episode's error
                ep.fail(f"the agent raised {type(e).__name__}: {e}")
            finally:
                await client.close()

        async def every() -> None:
            await asyncio.gather(*(one(ep) for ep in episodes))

        threading.Thread(target=asyncio.run, args=(every(),), daemon=True, name="frl-agents").start()
        return

    def run(ep: AgentEpisode) -> None:
        client = openai.OpenAI(**headers(ep))
        try:
            ep.returned(agent(dict(ep.row), client))
        except BaseException as e:  # noqa: BLE001 - the agent's failure is its episode's error
            ep.fail(f"the agent raised {type(e).__name__}: {e}")
        finally:
            client.close()

    for ep in episodes:
        threading.Thread(target=run, args=(ep,), daemon=True, name=f"frl-agent-{ep.k}").start()
