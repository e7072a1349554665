"""Any agent program through an OpenAI-compatible endpoint: during a step the core serves the live policy on
loopback and records every call's token ids by session (docs/episodes.md, "Any agent program").

The stage's ``agent: agents.py:solve`` is called as ``solve(row, client)`` for each row x ``num_generations``,
all at once (threads; an ``async def`` agent runs on one event loop with ``openai.AsyncOpenAI``), each with an
official ``openai`` client whose ``X-Session-ID`` header names its episode. The server is the one ``frl serve``
uses (``serving/app.py``); what generates is :class:`RolloutEndpoint`: it collects concurrent calls (until
every running episode has asked, or ``batch_wait_ms``) and generates them in ONE ``run_backend`` call with the
stage's backend and sampling, on the trainer's thread, so the behaviour log-probs are what the backend reported
for the sampled ids, as everywhere in the loop. Each session's calls extend one append-only token sequence
(``serving/sessions.py``); each episode becomes a Rollout built as an environment episode's is
(``loop/episodes.py: episode_rollout``), its reward the number the agent returned (the last turn's step reward:
score it with ``{type: environment}``). An agent that raises, returns no number or runs past ``timeout_s`` has
an error, never a zero.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import math
import queue
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

from feedback_rl.base import Backend, SamplingParams
from feedback_rl.episodes.tokens import EpisodeTokens
from feedback_rl.episodes.tool_calls import parse_tool_calls
from feedback_rl.loop.episodes import episode_metrics, episode_rollout
from feedback_rl.loop.rollout import cut_at_stop, run_backend, with_stops
from feedback_rl.modeling.chat import prompt_turns
from feedback_rl.serving.app import ServerThread, build_app
from feedback_rl.serving.jobs import Job, Piece, Text
from feedback_rl.serving.protocol import SESSION_HEADER, ApiError, Ask, Tok, bad
from feedback_rl.serving.sessions import Session
from feedback_rl.types import Rollout

MODEL_NAME = "policy"   # what /v1/models lists; any model name a request gives is served by the policy


class AgentEpisode:
    """One agent call: its session's tokens, and how it ended (the fields ``episode_rollout`` reads)."""

    def __init__(self, k: int, group: int, row: dict, sid: str, tokenizer: Any, stops: set[int]):
        self.k, self.group, self.row, self.sid = k, group, row, sid
        self.session = Session(tokenizer, stops)
        self.tokenizer = tokenizer
        self.infos: list[dict] = []
        self.done = self.truncated = self.finished = False
        self.error: str | None = None
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

    def end(self, value: Any) -> None:
        """The agent returned ``value``: the episode's reward, given to its last turn."""
        with self.lock:
            if self.finished:
                return
            self.finished = True
            if self.session.tokens is None or not self.session.tokens.turns:
                self.error = "the agent never called the model"
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                self.error = f"the agent returned {value!r}, not a finite number"
            else:
                self.session.tokens.set_reward(float(value))
                self.done = True

    def fail(self, message: str, truncated: bool = False) -> None:
        """The agent raised, or ran out of time (``truncated``)."""
        with self.lock:
            if not self.finished:
                self.finished, self.error, self.truncated = True, message, truncated


@dataclass
class _Call:
    job: Job
    episode: AgentEpisode
    prompt_ids: list[int]
    max_tokens: int


class RolloutEndpoint:
    """The server's engine during rollouts: calls by session, generated in batches on the trainer's thread
    (:meth:`serve`) through the core's one generation path."""

    tools = token_in = True

    def __init__(self, backend: Backend, model: torch.nn.Module, tokenizer: Any, sampling: SamplingParams,
                 context: int, wait_s: float):
        self.backend, self.model, self.tokenizer, self.context, self.wait_s = backend, model, tokenizer, context, wait_s
        self.sampling = with_stops(sampling, tokenizer, model)
        self.stops = set(self.sampling.stop_token_ids)
        self.text = Text(tokenizer)
        self.stats = {"requests": 0, "batches": 0, "max_batch": 0, "generated_tokens": 0}
        self.episodes: dict[str, AgentEpisode] = {}
        self.calls: queue.Queue[_Call] = queue.Queue()

    # ------------------------------------------------------------------ the server's side (its event loop)
    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def episode(self, sid: str | None) -> AgentEpisode:
        if sid is None:
            raise ApiError(400, f"the {SESSION_HEADER} header is required: the client the agent was given sets it",
                           code="missing_session")
        ep = self.episodes.get(sid)
        if ep is None:
            raise ApiError(404, f"{SESSION_HEADER} {sid!r}: no such episode in this step", code="unknown_session")
        if ep.finished:
            raise ApiError(409, f"{SESSION_HEADER} {sid!r}: the episode has ended (its agent returned, failed or "
                                "ran past agent.timeout_s)", code="session_ended")
        return ep

    def chat_prompt(self, turns: list[dict], tools: list[dict], session: str | None, encode: Any
                    ) -> tuple[str, list[int]]:
        ep = self.episode(session)
        try:
            with ep.session.lock:
                ids = ep.session.chat(turns, tools)
        except Exception as e:  # noqa: BLE001 - the template refused the conversation: the request's to fix
            raise bad("messages", f"{type(e).__name__}: {e}") from None
        return "", ids

    def token_prompt(self, ids: list[int], session: str | None) -> tuple[str, list[int]]:
        ep = self.episode(session)
        with ep.session.lock:
            return "", ep.session.token_in(list(ids))

    async def submit(self, prompts: list[tuple[str, list[int]]], ask: Ask, session: str | None = None) -> Job:
        ep = self.episode(session)
        for key, off in (("n", ask.n == 1), ("stop", not ask.stop), ("echo", not ask.echo),
                         ("top_logprobs", not ask.top_logprobs)):
            if not off:
                raise bad(key, "not supported while training (each call is one sample of the policy, with the "
                               "stage's rollout settings; the sampled token's log-prob is reported)")
        if len(prompts) != 1:
            raise bad("prompt", "one prompt per call while training")
        job = Job(prompts, ask)
        ids = prompts[0][1]
        # the reply may take max_tokens, at most the stage's max_new_tokens, and no more than the context has left
        limit = min(ask.max_tokens or self.sampling.max_new_tokens, self.sampling.max_new_tokens,
                    self.context - len(ids))
        if limit < 1:
            raise bad("messages", f"the conversation is {len(ids)} tokens, the policy's whole context of {self.context}")
        self.stats["requests"] += 1
        self.calls.put(_Call(job, ep, ids, limit))
        return job

    # ------------------------------------------------------------------ the trainer's side
    def serve(self, episodes: list[AgentEpisode], timeout_s: float) -> None:
        """Generate every call the episodes' agents make, on this thread, until every episode has ended."""
        while True:
            now = time.monotonic()
            for ep in episodes:
                if not ep.finished and now - ep.started > timeout_s:
                    ep.fail(f"the agent ran past agent.timeout_s ({timeout_s:g} s)", truncated=True)
            live = sum(not ep.finished for ep in episodes)
            if not live and self.calls.empty():
                return
            try:
                batch = [self.calls.get(timeout=0.02)]
            except queue.Empty:
                continue
            deadline = time.monotonic() + self.wait_s
            while len(batch) < live and (left := deadline - time.monotonic()) > 0:
                try:
                    batch.append(self.calls.get(timeout=left))
                except queue.Empty:
                    break
            self._generate(batch)

    def _generate(self, batch: list[_Call]) -> None:
        """One backend call for ``batch``; each call's ids cut at its stop token and its max_tokens, recorded
        into its session, and answered."""
        calls = []
        for c in batch:
            if c.episode.finished or c.job.cancelled:
                c.job.emit(ApiError(409, "the episode has ended", code="session_ended"))
            else:
                calls.append(c)
        if not calls:
            return
        sampling = replace(self.sampling, max_new_tokens=max(c.max_tokens for c in calls))
        self.stats["batches"] += 1
        self.stats["max_batch"] = max(self.stats["max_batch"], len(calls))
        try:
            gens = run_backend(self.backend, self.model, self.tokenizer, [c.prompt_ids for c in calls], sampling)
        except Exception as e:
            for c in calls:
                c.job.emit(ApiError(500, f"generation failed: {type(e).__name__}: {e}", code="generation_failed"))
            raise
        for c, gen in zip(calls, gens):
            gen = cut_at_stop(gen, sorted(self.stops))
            ids = gen.completion_ids[: c.max_tokens]
            logprobs = gen.logprobs.reshape(-1)[: len(ids)].tolist() if gen.logprobs is not None else None
            self.stats["generated_tokens"] += len(ids)
            c.job.emit(self._answer(c, ids, logprobs))

    def _answer(self, c: _Call, ids: list[int], logprobs: list[float] | None) -> Piece:
        session = c.episode.session
        with session.lock:
            text = session.sampled(ids, logprobs)
        finish = "stop" if ids and ids[-1] in self.stops else "length"
        toks = None
        if c.job.ask.top_logprobs is not None and logprobs is not None:
            toks, offset = [], 0
            for t, lp in zip(ids, logprobs):
                piece = self.text.decode([t], False)
                toks.append(Tok(piece, lp, [], offset))
                offset += len(piece)
        calls = None
        if session.tools:
            names = {t["function"]["name"] for t in session.tools}
            found = parse_tool_calls(text, names)
            c.episode.infos.append({"tool_calls": [{"name": f.name, "outcome": f.outcome} for f in found]})
            calls = [{"id": f"call_{c.episode.k}_{session.calls}_{j}", "type": "function",
                      "function": {"name": f.name, "arguments": json.dumps(f.arguments)}}
                     for j, f in enumerate(found) if f.ok] or None
            if calls and finish == "stop":
                finish = "tool_calls"
        else:
            c.episode.infos.append({})
        return Piece(0, text, toks, finish, len(ids), token_ids=list(ids), tool_calls=calls)


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
                ep.end(await asyncio.wait_for(agent(dict(ep.row), client), timeout_s))
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
            ep.end(agent(dict(ep.row), client))
        except BaseException as e:  # noqa: BLE001 - the agent's failure is its episode's error
            ep.fail(f"the agent raised {type(e).__name__}: {e}")
        finally:
            client.close()

    for ep in episodes:
        threading.Thread(target=run, args=(ep,), daemon=True, name=f"frl-agent-{ep.k}").start()
