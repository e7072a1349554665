"""The rollout endpoint's engine: the calls agents make during a step, by session, generated in batches on the
trainer's thread through the core's one generation path (loop/agents.py runs the agents).

It collects concurrent calls (until every running episode has asked, or ``batch_wait_ms``) and generates them in
ONE ``run_backend`` call with the stage's backend (HF decode loop or vLLM) and the stage's sampling, so the
behaviour log-probs are what the backend reported for the sampled ids, as everywhere in the loop. Each reply is cut
at its first stop token and its ``max_tokens`` (at most the stage's ``max_new_tokens``), recorded into its
session (serving/sessions.py) and answered with its ids and log-probs; Hermes tool calls in a reply to a call that
offered tools come back as OpenAI ``tool_calls`` (the server parses them, serving/tool_replies.py; the outcomes are
recorded here for the env/tool_calls metrics).
"""
from __future__ import annotations

import queue
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from feedback_rl.base import Backend, SamplingParams
from feedback_rl.loop.rollout import cut_at_stop, run_backend, with_stops
from feedback_rl.serving.jobs import Job, Piece, Text
from feedback_rl.serving.protocol import SESSION_HEADER, ApiError, Ask, Tok, bad
from feedback_rl.serving.tool_replies import offered_calls

if TYPE_CHECKING:
    from feedback_rl.loop.agents import AgentEpisode


@dataclass
class _Call:
    job: Job
    episode: "AgentEpisode"
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

    def admit(self, ask: Ask, session: str | None) -> None:
        """A call the session can record: one sample, as the stage samples (checked before its prompt is
        recorded, so a refused call leaves the session as it was)."""
        self.episode(session)
        for key, off in (("n", ask.n == 1), ("stop", not ask.stop), ("echo", not ask.echo),
                         ("top_logprobs", not ask.top_logprobs)):
            if not off:
                raise bad(key, "not supported while training (each call is one sample of the policy, with the "
                               "stage's rollout settings; the sampled token's log-prob is reported)")

    async def submit(self, prompts: list[tuple[str, list[int]]], ask: Ask, session: str | None = None) -> Job:
        ep = self.episode(session)
        if len(prompts) != 1:
            raise bad("prompt", "one prompt per call while training")
        job = Job(prompts, ask)
        ids = prompts[0][1]
        # the reply may take max_tokens, at most the stage's max_new_tokens, and no more than the context has left
        limit = min(ask.max_tokens or self.sampling.max_new_tokens, self.sampling.max_new_tokens,
                    self.context - len(ids))
        if limit < 1:
            raise bad("messages", f"the conversation is {len(ids)} tokens, the policy's whole context of "
                                  f"{self.context}")
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
            gen = cut_at_stop(gen, self.sampling.stop_token_ids)
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
        if session.tools:   # each call's outcome, for env/tool_calls/*; the server makes the tool_calls
            c.episode.infos.append({"tool_calls": [{"name": f.name, "outcome": f.outcome}
                                                   for f in offered_calls(text, session.tools)]})
        else:
            c.episode.infos.append({})
        return Piece(0, text, toks, finish, len(ids), token_ids=list(ids))
