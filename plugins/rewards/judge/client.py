"""Calls to an OpenAI-compatible chat API with the operational knobs a long run needs.

Concurrency bound, requests- and tokens-per-minute budgets, a per-call timeout, retries with
exponential backoff and jitter on 429, 5xx, timeouts and dropped connections (a server's
``Retry-After`` is honoured, up to ``backoff_max``), and a circuit breaker that fails fast after repeated failures.
The ``openai`` client's own retries are off: this module owns the retry policy, so it is counted.
"""
from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import openai


@dataclass
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int


class CallFailed(Exception):
    """The call failed for good (retries spent, breaker open, or a non-retryable status).
    ``setting``: what to check when this is how every call fails (nothing answered at the URL, the key
    was refused, no such route or model): a wrong setting rather than a judge having a bad day."""

    def __init__(self, message: str, setting: str | None = None):
        super().__init__(message)
        self.setting = setting


class RateLimiter:
    """Sliding one-minute window over requests and tokens; ``acquire`` waits until both fit."""

    def __init__(self, rpm: float | None, tpm: float | None):
        self.rpm, self.tpm = rpm, tpm
        self._window: deque[tuple[float, int]] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self, tokens: int) -> None:
        if self.rpm is None and self.tpm is None:
            return
        async with self._lock:  # FIFO: one waiter at a time holds the head of the line
            while True:
                now = time.monotonic()
                while self._window and now - self._window[0][0] >= 60.0:
                    self._window.popleft()
                used = sum(t for _, t in self._window)
                fits_rpm = self.rpm is None or len(self._window) + 1 <= self.rpm
                fits_tpm = self.tpm is None or not self._window or used + tokens <= self.tpm
                if fits_rpm and fits_tpm:
                    self._window.append((now, tokens))
                    return
                await asyncio.sleep(max(0.005, 60.0 - (now - self._window[0][0])))


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failed calls; after ``cooldown`` seconds one trial call
    goes through (half-open): success closes it, failure opens it again."""

    def __init__(self, threshold: int, cooldown: float):
        self.threshold, self.cooldown = threshold, cooldown
        self.failures, self.opened_at, self.trips = 0, None, 0

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if time.monotonic() - self.opened_at >= self.cooldown:
            self.opened_at = time.monotonic()  # half-open: this call is the trial; others keep failing fast
            return True
        return False

    def record(self, ok: bool) -> None:
        if ok:
            self.failures, self.opened_at = 0, None
            return
        self.failures += 1
        if self.threshold and self.failures >= self.threshold:
            if self.opened_at is None:
                self.trips += 1
            self.opened_at = time.monotonic()


def _retry_after(e: Exception) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds form), if the server sent them."""
    response = getattr(e, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        if "retry-after" in headers:
            return float(headers["retry-after"])
    except ValueError:
        return None
    return None


class JudgeClient:
    def __init__(self, base_url: str, api_key: str, model: str, *, concurrency: int, rpm: float | None,
                 tpm: float | None, timeout: float, max_retries: int, backoff_base: float, backoff_max: float,
                 breaker_threshold: int, breaker_cooldown: float):
        self.base_url, self.model, self.timeout, self.max_retries = base_url, model, timeout, max_retries
        self.answered = 0  # calls that got a reply: a URL that once answered is not a wrong setting
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout)
        self._sem = asyncio.Semaphore(concurrency)
        self.limiter = RateLimiter(rpm, tpm)
        self.breaker = CircuitBreaker(breaker_threshold, breaker_cooldown)
        self.counts: Counter[str] = Counter()  # requests, retries, rate_limited, server_errors, timeouts, ...
        self.waits: list[float] = []           # every backoff slept, in seconds (tests check Retry-After)

    async def chat(self, messages: list[dict], **params: Any) -> Reply:
        """One judgment; raises :class:`CallFailed` with a one-line reason."""
        estimate = sum(len(m["content"]) for m in messages) // 4 + int(params.get("max_tokens") or 0)
        last, kinds = "", set()
        for attempt in range(self.max_retries + 1):
            async with self._sem:
                if not self.breaker.allow():  # checked once a slot is free, so queued calls see recent failures
                    self.counts["breaker_rejected"] += 1
                    raise CallFailed(f"circuit breaker open after {self.breaker.failures} consecutive failures "
                                     f"(last: {last or 'see earlier errors'})")
                await self.limiter.acquire(estimate)
                self.counts["requests"] += 1
                try:
                    async with asyncio.timeout(self.timeout + 1.0):  # a guard past the client's own timeout
                        raw = await self._client.chat.completions.with_raw_response.create(
                            model=self.model, messages=messages, timeout=self.timeout, **params)
                except (openai.APITimeoutError, TimeoutError):
                    kind, last, wait = "timeouts", f"timed out after {self.timeout:g}s", None
                except openai.RateLimitError as e:
                    kind, last, wait = "rate_limited", "429 rate limited", _retry_after(e)
                except openai.APIStatusError as e:
                    if e.status_code < 500:  # a bad request will not get better by asking again
                        self.counts["client_errors"] += 1
                        self.breaker.record(False)
                        raise CallFailed(f"HTTP {e.status_code} from {self.base_url}: {_message(e)}",
                                         _SETTINGS.get(e.status_code)) from None
                    kind, last, wait = "server_errors", f"HTTP {e.status_code}: {_message(e)}", _retry_after(e)
                except openai.APIConnectionError as e:
                    cause = e.__cause__ or e
                    kind, last, wait = "connection_errors", f"cannot connect to {self.base_url}: {cause}", None
                else:
                    resp = raw.parse()
                    if isinstance(resp, str):  # the client hands back the text of anything but JSON
                        self.counts["not_json"] += 1
                        self.breaker.record(False)
                        raise CallFailed(_not_json(raw), _SETTINGS["not_json"])
                    self.answered += 1
                    self.breaker.record(True)
                    usage = resp.usage
                    text = (resp.choices[0].message.content or "") if resp.choices else ""
                    return Reply(text, getattr(usage, "prompt_tokens", 0) or 0,
                                 getattr(usage, "completion_tokens", 0) or 0)
            self.counts[kind] += 1
            kinds.add(kind)
            if attempt == self.max_retries:
                break
            self.counts["retries"] += 1
            if wait is None:  # exponential backoff with jitter, so retries of many callers spread out
                wait = min(self.backoff_max, self.backoff_base * 2 ** attempt) * random.uniform(0.5, 1.0)
            else:  # a server's Retry-After is honoured up to the recipe's limit, so one header cannot stall a run
                wait = min(wait, self.backoff_max)
            self.waits.append(wait)
            await asyncio.sleep(wait)
        self.breaker.record(False)
        raise CallFailed(f"{last} (after {self.max_retries + 1} attempts)",
                         _SETTINGS["connect"] if kinds == {"connection_errors"} else None)

    async def close(self) -> None:
        await self._client.close()


_SETTINGS = {"connect": "is the server running and base_url right?",
             401: "check the key (api_key_env)", 403: "check the key (api_key_env)",
             404: "check base_url (an OpenAI-compatible API usually ends in /v1) and model",
             "not_json": "check base_url: it should point at an OpenAI-compatible API (usually ending in /v1)"}


def _not_json(raw: Any) -> str:
    """What came back instead of a chat completion: where from, its content type and first bytes."""
    kind = raw.headers.get("content-type", "").split(";")[0].strip() or "no content type"
    start = " ".join(raw.text[:60].split())
    return f"{raw.url} answered {kind}, not JSON (HTTP {raw.status_code}, starts {start!r})"


def unreachable(base_url: str, timeout: float) -> str | None:
    """Why nothing answers at ``base_url`` (refused, no such host, no answer in ``timeout`` s), or None when
    something does: any HTTP answer, even an error status, shows a server is listening there."""
    import socket
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/models", timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as e:
        reason = e.reason
    except (TimeoutError, socket.timeout, OSError) as e:
        reason = e
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout:g}s"
    return getattr(reason, "strerror", None) or str(reason)


def _message(e: openai.APIStatusError) -> str:
    body = e.body if isinstance(e.body, dict) else {}
    msg = body.get("message") or (body.get("error") or {}).get("message") if isinstance(body, dict) else None
    return str(msg or e.message)[:200]
