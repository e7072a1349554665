"""Episodes in the one generation path: many episodes played at once against an environment.

Each rollout of a step opens an episode; while any is live, the next assistant turn of every live episode is
generated in ONE backend call (``run_backend`` with each episode's current ids as its prompt), cut at its stop
token and appended verbatim (``EpisodeTokens``: mask 1, behaviour log-probs kept); the turn's text, decoded,
steps the environment, whose answer is rendered alone and appended (mask 0). An episode ends when the
environment says done or truncated, after ``max_turns`` turns, when the context has no room for another turn
(truncated), past the environment's ``max_seconds`` of wall time (truncated: a step still running is cancelled),
or when the environment raises (the episode's ``error``: its score is an error, never a zero). ``episode["end"]``
says which, and ``env/end/<reason>`` counts them.

Each finished episode is one :class:`~feedback_rl.types.Rollout`: ``prompt_ids`` the opening turns, the rest its
``completion_ids`` with ``completion_mask`` 0 on the environment's tokens. Where the chat template could not be
extended turn by turn (``env/bridge_fallbacks``), each later segment is a rollout of its own in
``Rollout.segments`` (prompted by the conversation rendered again, its sampled ids verbatim), trained with the
episode's judgement.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import torch

from feedback_rl.base import Backend, Environment, SamplingParams
from feedback_rl.episodes.tokens import EpisodeTokens
from feedback_rl.episodes.tool_calls import OUTCOMES
from feedback_rl.episodes.tools import offer
from feedback_rl.errors import UserError
from feedback_rl.loop.rollout import cut_at_stop, run_backend, with_stops
from feedback_rl.types import Rollout


ENDS = ("done", "truncated", "max_turns", "context", "max_seconds", "error")
"""Why an episode ended: the environment said done or truncated, its ``max_turns``-th turn, no room left in the
context, past its ``max_seconds``, or the environment raised."""


class _Live:
    """One episode being played: the environment's episode, its tokens, and what it did."""

    def __init__(self, k: int, group: int, row: dict, episode: Any, tokens: EpisodeTokens, offered: str):
        self.k, self.group, self.row, self.episode, self.tokens = k, group, row, episode, tokens
        self.opening = len(tokens.messages)
        self.offered = offered
        self.infos: list[dict] = []
        self.done = self.truncated = False
        self.error: str | None = None
        self.end: str | None = None   # one of ENDS, once it ended
        self.started = time.monotonic()

    def stop(self, end: str) -> None:
        """End the episode cut short by a limit (``end`` names it)."""
        self.truncated, self.end = True, end


def play_episodes(backend: Backend, model: torch.nn.Module, tokenizer: Any, environment: Environment,
                  rows: list[dict], sampling: SamplingParams, num_generations: int, max_turns: int, context: int,
                  policy_version: int = 0, seed: int = 0, system_prompt: str | None = None
                  ) -> tuple[list[Rollout], dict[str, float]]:
    """``num_generations`` episodes of each row, played together; their rollouts (in row order, rollouts of
    one row sharing a ``group``) and the ``env/`` metrics of the step."""
    sampling = with_stops(sampling, tokenizer, model)
    stops = sampling.stop_token_ids
    max_seconds = environment.options.max_seconds
    groups = [g for g in range(len(rows)) for _ in range(num_generations)]
    opened = _reset_all(environment, rows, groups, policy_version, seed)
    try:
        episodes = [_open(tokenizer, rows[g], g, k, opened[k], stops, system_prompt)
                    for k, g in enumerate(groups)]
        _check_openings_fit(environment, episodes, context, sampling.max_new_tokens)
    except BaseException:
        for episode in opened:
            episode.close()
        raise
    try:
        live = list(episodes)
        while live:
            # a turn needs room for max_new_tokens: past the context the model has no positions to generate at
            for ep in live:
                if ep.tokens.room(context) < sampling.max_new_tokens:
                    ep.stop("context")
                elif _left(ep, max_seconds) <= 0:
                    ep.stop("max_seconds")
            live = [ep for ep in live if not ep.truncated]
            if not live:
                break
            gens = run_backend(backend, model, tokenizer, [ep.tokens.prompt_ids() for ep in live], sampling)
            for ep, gen in zip(live, gens):
                gen = cut_at_stop(gen, stops)
                ep.tokens.add_sampled(gen.completion_ids, gen.logprobs)
            replies = _step_all(live, max_seconds)
            for ep, reply in zip(live, replies):
                if reply is _TIME_UP:
                    ep.stop("max_seconds")
                    ep.infos.append({})
                    continue
                _answer(ep, reply, max_turns)
            live = [ep for ep in live if not (ep.done or ep.truncated or ep.error)]
    finally:
        for ep in episodes:
            ep.episode.close()
    rollouts = [episode_rollout(ep, tokenizer, policy_version) for ep in episodes]
    return rollouts, episode_metrics(episodes)


def _reset_all(environment: Environment, rows: list[dict], groups: list[int], version: int, seed: int) -> list[Any]:
    """Every episode of the step opened, awaited together (an environment that waits on I/O, a server's
    WebSocket sessions, opens them at once; a synchronous ``reset`` runs one after the other). A row the
    environment cannot open is the user's data or plugin: one line naming it, the others closed."""
    async def all_resets():
        return await asyncio.gather(*(environment.reset_async(rows[g], seed=seed + k, episode_id=f"v{version}-{k}")
                                      for k, g in enumerate(groups)), return_exceptions=True)
    opened = asyncio.run(all_resets())
    failed = next(((k, e) for k, e in enumerate(opened) if isinstance(e, BaseException)), None)
    if failed is None:
        return opened
    for episode in opened:
        if not isinstance(episode, BaseException):
            episode.close()
    k, e = failed
    if not isinstance(e, Exception):   # KeyboardInterrupt and the like are not the row's fault
        raise e
    raise UserError(f"environment '{environment.name}' could not open an episode of row {groups[k]} "
                    f"({type(e).__name__}: {e})") from None


def _open(tokenizer: Any, row: dict, group: int, k: int, episode: Any, stops: list[int],
          system_prompt: str | None) -> _Live:
    """The live episode of an opened environment episode: its opening turns (with the tools offered) tokenized."""
    messages = list(episode.messages)
    if system_prompt and (not messages or messages[0].get("role") != "system"):
        messages = [{"role": "system", "content": system_prompt}] + messages
    messages, schemas, offered = offer(tokenizer, messages, episode.tools)
    tokens = EpisodeTokens(tokenizer, messages, tools=schemas, stop_ids=set(stops))
    return _Live(k, group, row, episode, tokens, offered)


def _check_openings_fit(environment: Environment, episodes: list[_Live], context: int, turn: int) -> None:
    """An opening that leaves no room for one turn of ``turn`` tokens can play nothing, and a sequence past the
    model's positions cannot be scored: the user's prompt, tools or model, refused on one line (a turn later in
    an episode that finds no room ends it truncated instead)."""
    for ep in episodes:
        if ep.tokens.room(context) < turn:
            size = len(ep.tokens.prompt_ids())
            tools = {"system_prompt": ", its tools described in the system turn",
                     "template": ", its tools in the template's tools block"}.get(ep.offered, "")
            raise UserError(f"environment '{environment.name}': the opening of row {ep.group} takes {size} tokens "
                            f"(its turns{tools}), leaving no room for a turn of "
                            f"rollout.max_new_tokens {turn} in the model's {context} positions: shorten it, offer "
                            "fewer tools, or use a model with a longer context")


_TIME_UP = object()
"""The reply of a step cancelled at its episode's ``max_seconds``."""


def _left(ep: _Live, max_seconds: float | None) -> float:
    """Seconds the episode has left of its wall-time limit (infinite without one)."""
    return float("inf") if max_seconds is None else max_seconds - (time.monotonic() - ep.started)


def _step_all(live: list[_Live], max_seconds: float | None = None) -> list[Any]:
    """Every live episode's environment answers its last turn; awaited together (an exception is returned).
    A step still running when its episode's time is up is cancelled: its reply is ``_TIME_UP`` (a synchronous
    ``step`` holds the event loop, so only an ``async`` step can be cut short)."""
    async def one(ep: _Live):
        step = ep.episode.step_async(dict(ep.tokens.messages[-1]))
        left = _left(ep, max_seconds)
        if left == float("inf"):
            return await step
        try:
            return await asyncio.wait_for(step, max(0.0, left))
        except TimeoutError:
            if _left(ep, max_seconds) > 0:   # the environment's own timeout: its error, not the limit
                raise
            return _TIME_UP

    async def all_steps():
        return await asyncio.gather(*(one(ep) for ep in live), return_exceptions=True)
    return asyncio.run(all_steps())


def _answer(ep: _Live, reply: Any, max_turns: int) -> None:
    """The environment's reply to the episode's last turn: its reward, and the episode's end or next turns."""
    if isinstance(reply, BaseException):
        ep.error, ep.end = f"step {ep.tokens.turns}: {type(reply).__name__}: {reply}", "error"
        ep.infos.append({})
        return
    ep.tokens.set_reward(reply.reward)
    ep.infos.append(dict(reply.info))
    if reply.done or reply.truncated or ep.tokens.turns >= max_turns:
        ep.done, ep.truncated = reply.done, not reply.done
        ep.end = "done" if reply.done else "truncated" if reply.truncated else "max_turns"
        ep.tokens.messages += list(reply.messages)   # shown in the transcript; nothing follows to train on
        return
    ep.tokens.add_environment(list(reply.messages))  # False: split (bridge_fallback), counted in the metrics


def episode_rollout(ep: Any, tokenizer: Any, version: int) -> Rollout:
    """An episode's Rollout: an environment's (:class:`_Live`) or an agent's (loop/agents.py), which hold the same
    fields (k, group, row, tokens, opening, offered, infos, done, truncated, error). A split episode's later
    segments are its ``segments``."""
    uid = f"v{version}-{ep.k}"
    seg, *rest = ep.tokens.segments
    p = seg.prompt_length
    turns = ep.tokens.messages[ep.opening:]
    first = _segment_rollout(seg, ep, version, uid, tokenizer.decode(seg.ids[:p], skip_special_tokens=True),
                             _transcript(turns))
    # later segments train; their text is the episode's transcript's, so none is decoded for them. A segment the
    # episode ended on at once sampled nothing.
    first.segments = [_segment_rollout(x, ep, version, f"{uid}/s{j}") for j, x in enumerate(rest, 1)
                      if any(x.mask[x.prompt_length:])]
    first.episode = {"turns": turns, "rewards": list(ep.tokens.rewards), "infos": ep.infos, "done": ep.done,
                     "truncated": ep.truncated, "error": ep.error, "tools_offered": ep.offered,
                     "bridge_fallback": ep.tokens.bridge_fallback, "end": ep.end,
                     "segments": 1 + len(first.segments),
                     "spans": [[s.start - p, s.end - p, s.role, s.turn] for s in seg.spans[1:]]}
    return first


def _segment_rollout(seg: Any, ep: Any, version: int, uid: str, prompt: str = "", completion: str = "") -> Rollout:
    """One segment of an episode as a sequence to train on: its prompt, then its turns (mask 1 on the sampled
    ids, with their behaviour log-probs)."""
    p = seg.prompt_length
    lp = torch.tensor(seg.logprobs[p:], dtype=torch.float32) if seg.logprobs is not None else None
    return Rollout(prompt=prompt, completion=completion, row=ep.row, group=ep.group, prompt_ids=seg.ids[:p],
                   completion_ids=seg.ids[p:], logprobs=lp, truncated=ep.truncated, policy_version=version, uid=uid,
                   completion_mask=seg.mask[p:])


def _transcript(turns: list[dict]) -> str:
    """The turns after the opening, one block each, for logs and judges (training reads the ids)."""
    return "\n\n".join(f"[{t['role']}] {t.get('content', '')}" for t in turns)


def episode_metrics(episodes: list[Any]) -> dict[str, float]:
    """The step's ``env/`` metrics of its episodes (an environment's or an agent's)."""
    n = max(1, len(episodes))
    outcomes: Counter = Counter()
    calling = 0   # episodes with a tool call: the rate a model that learns to use its tools raises
    for ep in episodes:
        before = sum(outcomes.values())
        for info in ep.infos:
            outcomes.update(call.get("outcome", "?") for call in info.get("tool_calls", ()))
        calling += sum(outcomes.values()) > before
    out = {"env/turns_mean": sum(ep.tokens.turns for ep in episodes) / n,
           "env/bridge_fallbacks": float(sum(ep.tokens.bridge_fallback for ep in episodes)),
           "env/done_rate": sum(ep.done for ep in episodes) / n,
           "env/errors": float(sum(ep.error is not None for ep in episodes)),
           "env/tool_calls_per_episode": sum(outcomes.values()) / n, "env/tool_call_rate": calling / n}
    if any(ep.offered != "none" for ep in episodes):   # every outcome, zeros too: ranks average the same keys
        outcomes.update(dict.fromkeys(OUTCOMES, 0))
    out.update({f"env/tool_calls/{k}": v / n for k, v in sorted(outcomes.items())})
    ends = Counter(ep.end for ep in episodes)   # every reason, zeros too: ranks average the same keys
    out.update({f"env/end/{k}": ends[k] / n for k in ENDS})
    return out
