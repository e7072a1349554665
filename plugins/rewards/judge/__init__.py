"""The ``judge`` reward source: an LLM judge over any OpenAI-compatible API (RLAIF).

Modes: ``pointwise`` (a rubric score parsed from the reply; reference-guided when the template
uses a gold-answer field of the row, e.g. ``{answer}``) and ``pairwise`` (A vs B, asked in both
orders: the orders agree -> that winner, they disagree -> a tie). A reply that cannot be parsed
counts under ``on_parse_error`` (abstain or error), never as a number.
"""
from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from feedback_rl import PluginContext, PluginOptions, Preference, RewardSource, Rollout, Score, UserError, hookimpl
from feedback_rl.data import prompt_text, prompt_turns

from .cache import ReplyCache, cache_key
from .client import CallFailed, JudgeClient, unreachable
from .template import Template, parse_score, parse_verdict, template_values

PROBE_TIMEOUT_S = 10.0  # a server that does not answer a GET this fast before training is down for our purpose
DEFAULT_POINTWISE = ("Rate the response to the prompt from 0 to 10.\nPrompt: {prompt}\nResponse: {completion}\n"
                     'Reply with JSON only: {"score": <number>}')
DEFAULT_PAIRWISE = ("Which response answers the prompt better?\nPrompt: {prompt}\n[A]: {completion_a}\n"
                    '[B]: {completion_b}\nReply with JSON only: {"winner": "A"} or {"winner": "B"} or {"winner": "tie"}')


class JudgeSource(RewardSource):
    """Scores rollouts (or compares pairs) by asking a model behind an OpenAI-compatible API."""

    name = "judge"

    class Options(PluginOptions):
        base_url: str
        model: str
        api_key_env: str | None = None  # the NAME of the variable holding the key; the key never goes in a recipe
        mode: Literal["pointwise", "pairwise"] = "pointwise"
        template: str | None = Field(None, description=(
            "the judge prompt; {variables}: prompt (the prompt as readable text: a plain string as it is, one user "
            "turn as its content, a longer conversation as role: content lines), prompt_turns (its turns as "
            "JSON), prompt_rendered (the exact text the policy was prompted with, chat template included), "
            "completion (pointwise) or completion_a and completion_b (pairwise; an episode's completion is its "
            "transcript, one [role] block per turn), turns (or turns_a and turns_b: the turns after the prompt as "
            "JSON with their roles), final_answer (pointwise: an episode's last assistant turn), and every text or "
            "number field "
            "of the row (e.g. answer)"))
        template_file: str | None = Field(None, description="a file holding the template (same variables), "
                                                            "relative to the recipe")
        system: str | None = None
        max_tokens: int = Field(64, ge=1)
        temperature: float = Field(0.0, ge=0.0)
        json_mode: bool = False          # response_format={"type": "json_object"} where the server supports it
        score_range: tuple[float, float] | None = None  # a parsed score outside it is a parse failure
        on_parse_error: Literal["abstain", "error"] = "abstain"
        concurrency: int = Field(8, ge=1)
        requests_per_minute: float | None = Field(None, gt=0)
        tokens_per_minute: float | None = Field(None, gt=0)
        timeout: float = Field(60.0, gt=0)
        max_retries: int = Field(4, ge=0)
        backoff_base: float = Field(0.5, ge=0)
        backoff_max: float = Field(30.0, ge=0, description="the longest wait before a retry, in seconds; a server's "
                                   "Retry-After is capped by it too")
        breaker_threshold: int = Field(20, ge=0)     # consecutive failed calls; 0 turns the breaker off
        breaker_cooldown: float = Field(30.0, ge=0)
        cache: bool | str = True         # true: <run_dir>/judge_cache/<name>.sqlite; a path; false: off
        cost_per_1m_prompt_tokens: float = Field(0.0, ge=0)
        cost_per_1m_completion_tokens: float = Field(0.0, ge=0)

        @model_validator(mode="after")
        def _one_template(self) -> "JudgeSource.Options":
            if self.template is not None and self.template_file is not None:
                raise ValueError("set template or template_file, not both")
            return self

    @classmethod
    def judgments(cls, options: Options) -> set[str]:
        return {"preferences"} if options.mode == "pairwise" else {"scores"}

    @classmethod
    def preflight(cls, options: Options, context: PluginContext, rows: Any) -> None:
        """The URL parses, the key's variable is set, the template reads and renders against every row."""
        _check_url(options.base_url, context.name)
        _api_key(options, context.name)
        template = _template(options, context)
        if rows is not None:
            template.check_rows(rows, _completion_fields(options.mode == "pairwise"))

    @classmethod
    def probe(cls, options: Options, context: PluginContext) -> None:
        """Something answers at base_url (any HTTP status will do: servers differ in what they serve there)."""
        timeout = min(options.timeout, PROBE_TIMEOUT_S)
        reason = unreachable(options.base_url, timeout)
        if reason is not None:
            raise UserError(f"judge '{context.name}' (stage '{context.stage}'): nothing answers at {options.base_url} "
                            f"({reason}); is the server running and base_url right?")

    def __init__(self, options: Options, context: PluginContext):
        super().__init__(options, context)
        o = self.options
        self.pairwise = o.mode == "pairwise"  # the engine reads it on the instance
        self.template = _template(o, context)
        api_key = _api_key(o, context.name)
        self._loop = asyncio.new_event_loop()  # one loop for the source's life: connections and budgets persist
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"judge-{context.name}", daemon=True)
        self._thread.start()
        self.client = self._on_loop(self._make_client(api_key))
        self.cache = None
        if o.cache is not False:
            path = context.resolve(o.cache) if isinstance(o.cache, str) else \
                Path(context.run_dir) / "judge_cache" / f"{context.name}.sqlite"
            self.cache = ReplyCache(path)
        self.counts: Counter[str] = Counter()
        self.latency_s = 0.0
        self.trace: deque[dict[str, Any]] = deque(maxlen=64)  # recent judgments, for `frl check`
        self._inflight: dict[str, asyncio.Future] = {}

    async def _make_client(self, api_key: str) -> JudgeClient:
        o = self.options
        return JudgeClient(o.base_url, api_key, o.model, concurrency=o.concurrency, rpm=o.requests_per_minute,
                           tpm=o.tokens_per_minute, timeout=o.timeout, max_retries=o.max_retries,
                           backoff_base=o.backoff_base, backoff_max=o.backoff_max,
                           breaker_threshold=o.breaker_threshold, breaker_cooldown=o.breaker_cooldown)

    def _on_loop(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    # ------------------------------------------------------------------ the RewardSource API
    def score(self, rollouts: list[Rollout]) -> list[Score]:
        if self.pairwise:
            raise RuntimeError(f"judge '{self.context.name}' is pairwise: it compares pairs, it does not score")
        requests = [self.template.render(self._values(r, completion=r.completion, turns=_turns(r),
                                                      final_answer=r.answer)) for r in rollouts]
        start = time.perf_counter()
        outcomes = self._on_loop(self._ask_all(requests))
        self.latency_s += time.perf_counter() - start
        self._refuse_wrong_setting(outcomes)
        return [self._to_score(out) for out in outcomes]

    def compare(self, pairs: list[tuple[Rollout, Rollout]]) -> list[Preference | Score]:
        """Each pair asked in both orders; agreement gives the winner, disagreement a tie (winner None).
        A pair whose judgment failed is its failure as a Score (error or abstain), counted by the mixer."""
        requests = []
        for a, b in pairs:
            requests.append(self.template.render(self._values(a, completion_a=a.completion, completion_b=b.completion,
                                                              turns_a=_turns(a), turns_b=_turns(b))))
            requests.append(self.template.render(self._values(a, completion_a=b.completion, completion_b=a.completion,
                                                              turns_a=_turns(b), turns_b=_turns(a))))
        start = time.perf_counter()
        outcomes = self._on_loop(self._ask_all(requests))
        self.latency_s += time.perf_counter() - start
        self._refuse_wrong_setting(outcomes)
        results: list[Preference | Score] = []
        for k, (a, b) in enumerate(pairs):
            first, second = self._to_verdict(outcomes[2 * k]), self._to_verdict(outcomes[2 * k + 1])
            if isinstance(first, Score) or isinstance(second, Score):
                failed = first if isinstance(first, Score) else second
                self.counts["errors" if failed.status == "error" else "abstains"] += 1
                results.append(failed)
                continue
            swapped = None if second is None else 1 - second  # the second order asks with b shown as A
            winner = first if first == swapped else None
            self.counts["ties" if winner is None else "decided"] += 1
            results.append(Preference(a, b, winner=winner, margin=1.0 if winner is not None else 0.0))
        return results

    def describe(self) -> dict[str, Any]:
        o = self.options
        return {"base_url": o.base_url, "model": o.model, "mode": o.mode, "api_key_env": o.api_key_env,
                "template": self.template.where, "template_sha256": self.template.hash,
                "variables": self.template.variables}

    def metrics(self) -> dict[str, float]:
        """Cumulative counters since the source started: calls, retries, faults, cache, tokens, cost."""
        o, c = self.options, self.client.counts
        out = {k: float(v) for k, v in (c + self.counts).items()}
        cost = (self.counts["prompt_tokens"] * o.cost_per_1m_prompt_tokens
                + self.counts["completion_tokens"] * o.cost_per_1m_completion_tokens) / 1e6
        out.update(cost_usd=cost, breaker_trips=float(self.client.breaker.trips), latency_s=self.latency_s)
        for key in ("requests", "retries", "errors", "abstains", "parse_failures", "cache_hits", "cache_misses",
                    "prompt_tokens", "completion_tokens"):
            out.setdefault(key, 0.0)
        return out

    def explain(self, n: int = 3) -> list[dict[str, Any]]:
        """The last ``n`` judgments: the exact messages sent, the raw reply, and what was parsed."""
        return list(self.trace)[-n:]

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._on_loop(self.client.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()
            if self.cache is not None:
                self.cache.close()

    # ------------------------------------------------------------------ pieces
    def _refuse_wrong_setting(self, outcomes: list[dict[str, Any]]) -> None:
        """No call ever got a reply and every one failed, some in a way that names a setting (no connection,
        key refused, no such route or model): a user's setting (exit code 2), not a judge having a bad day
        (error scores, counted against max_error_rate)."""
        named = next((o for o in outcomes if o.get("setting")), None)
        if named and self.client.answered == 0 and all("failure" in o for o in outcomes):
            raise UserError(f"judge '{self.context.name}': {named['failure']}; {named['setting']}")

    def _values(self, rollout: Rollout, **extra: str) -> dict[str, Any]:
        values = {k: v for k, v in rollout.row.items() if isinstance(v, (str, int, float, bool))}
        prompt = rollout.row.get("prompt")
        if not isinstance(prompt, (str, list)):
            prompt = rollout.prompt  # a row without a prompt of its own (e.g. a labeled item): the rendered text
        values.update(prompt=prompt_text(prompt), prompt_turns=json.dumps(prompt_turns(prompt), ensure_ascii=False),
                      prompt_rendered=rollout.prompt, **extra)
        return values

    def _params(self) -> dict[str, Any]:
        o = self.options
        params: dict[str, Any] = {"max_tokens": o.max_tokens, "temperature": o.temperature}
        if o.json_mode:
            params["response_format"] = {"type": "json_object"}
        return params

    async def _ask_all(self, requests: list[list[dict]]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self._ask(m) for m in requests)))

    async def _ask(self, messages: list[dict]) -> dict[str, Any]:
        """The reply text (from the cache when there) or the failure; identical requests share one call."""
        params = self._params()
        key = cache_key(self.options.model, self.template.hash, {"messages": messages, **params})
        if key in self._inflight:
            return await asyncio.shield(self._inflight[key])
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is not None:
            self.counts["cache_hits"] += 1
            return {"messages": messages, "reply": hit[0], "cached": True}
        self.counts["cache_misses"] += 1
        fut = self._loop.create_future()
        self._inflight[key] = fut
        try:
            out = await self._call(key, messages, params)
        except BaseException:  # cancelled: whoever shares the call is cancelled too, never left waiting
            fut.cancel()
            raise
        finally:
            del self._inflight[key]
        fut.set_result(out)
        return out

    async def _call(self, key: str, messages: list[dict], params: dict[str, Any]) -> dict[str, Any]:
        """One call to the server: the reply (cached) or the failure; any exception is this judgment's error."""
        try:
            reply = await self.client.chat(messages, **params)
        except CallFailed as e:
            return {"messages": messages, "failure": str(e), "setting": e.setting}
        except Exception as e:  # a bug below us is an error score (counted), not a crash of the whole batch
            return {"messages": messages, "failure": f"{type(e).__name__}: {e}", "setting": None}
        self.counts["prompt_tokens"] += reply.prompt_tokens
        self.counts["completion_tokens"] += reply.completion_tokens
        if self.cache is not None:
            self.cache.put(key, reply.text, reply.prompt_tokens, reply.completion_tokens)
        return {"messages": messages, "reply": reply.text, "cached": False}

    def _parse_failure(self, reply: str) -> Score:
        self.counts["parse_failures"] += 1
        reason = f"unparseable judge reply: {reply[:80]!r}"
        return Score.error(reason) if self.options.on_parse_error == "error" else Score.abstain(reason)

    def _to_score(self, out: dict[str, Any]) -> Score:
        if "failure" in out:
            score = Score.error(f"judge call failed: {out['failure']}")
        else:
            low, high = self.options.score_range or (None, None)
            value = parse_score(out["reply"], low, high)
            score = Score.ok(value) if value is not None else self._parse_failure(out["reply"])
        if not score.is_ok:
            self.counts["errors" if score.status == "error" else "abstains"] += 1
        self.trace.append({**out, "parsed": score.value if score.is_ok else None, "status": score.status,
                           "reason": score.reason})
        return score

    def _to_verdict(self, out: dict[str, Any]) -> int | None | Score:
        """0 (A), 1 (B), None (tie), or the failure as a Score (not counted here)."""
        if "failure" in out:
            result: int | None | Score = Score.error(f"judge call failed: {out['failure']}")
        else:
            parsed, winner = parse_verdict(out["reply"])
            result = winner if parsed else self._parse_failure(out["reply"])
        self.trace.append({**out, "parsed": None if isinstance(result, Score) else ("tie" if result is None else "AB"[result]),
                           "status": result.status if isinstance(result, Score) else "ok"})
        return result


def _check_url(url: str, name: str) -> None:
    """An http(s) URL with a host (and a numeric port, if any): a typo fails before any model loads."""
    from urllib.parse import urlsplit
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError as e:
        raise UserError(f"judge '{name}': base_url {url!r} does not parse: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"judge '{name}': base_url {url!r} is not an http(s) URL with a host "
                        "(e.g. http://127.0.0.1:8000/v1)")


def _api_key(options: JudgeSource.Options, name: str) -> str:
    if not options.api_key_env:
        return "unused"  # local servers take any key, and the client insists on one
    key = os.environ.get(options.api_key_env, "")
    if not key:
        raise UserError(f"judge '{name}': api_key_env: environment variable {options.api_key_env} is not set")
    return key


def _template(options: JudgeSource.Options, context: PluginContext) -> Template:
    pairwise = options.mode == "pairwise"
    if options.template_file is not None:
        path = context.resolve(options.template_file)
        if not path.is_file():
            raise UserError(f"judge '{context.name}': template_file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"judge '{context.name}': template_file {path} is not UTF-8 text ({e.reason} at "
                            f"byte {e.start})") from None
        return Template(text, str(options.template_file), options.system)
    text = options.template or (DEFAULT_PAIRWISE if pairwise else DEFAULT_POINTWISE)
    where = f"'{context.name}' (inline)" if options.template else f"'{context.name}' (default {options.mode})"
    return Template(text, where, options.system)


def _completion_fields(pairwise: bool) -> tuple[str, ...]:
    """What a judgment fills in besides the row: the completion, or the two of a pair (and their turns)."""
    return ("completion_a", "completion_b", "turns_a", "turns_b") if pairwise else \
        ("completion", "turns", "final_answer")


def _turns(rollout: Rollout) -> str:
    """The rollout's turns after the prompt as JSON, roles kept: an episode's tool calls, the environment's
    answers and the model's last word; a single completion is one assistant turn."""
    return json.dumps(rollout.turns, ensure_ascii=False)


@hookimpl
def frl_register_reward_sources(register):
    register(JudgeSource)
