"""Parsing judge replies, rendering templates, the rate limiter and the circuit breaker."""
from __future__ import annotations

import asyncio
import time

import pytest

from feedback_rl import UserError
from frl_plugins.rewards.judge.client import CircuitBreaker, RateLimiter
from frl_plugins.rewards.judge.template import Template, parse_score, parse_verdict


@pytest.mark.parametrize("reply,expected", [
    ('{"score": 7}', 7.0),
    ('Reasoning: 3 issues. {"score": 8.5}', 8.5),       # JSON wins over the earlier number
    ("I give it 6 out of 10", 6.0),                     # else the first number
    ("Score: -2", -2.0),
    ('{"score": "high"} 4', 4.0),
    ("no idea", None),
    ("", None),
    ('{"score": true}', None),
])
def test_parse_score(reply, expected):
    assert parse_score(reply) == expected


def test_parse_score_range():
    assert parse_score("11", 0, 10) is None and parse_score("10", 0, 10) == 10.0


@pytest.mark.parametrize("reply,expected", [
    ('{"winner": "A"}', (True, 0)), ('{"winner": "b"}', (True, 1)), ('{"winner": "tie"}', (True, None)),
    ("[[B]] because", (True, 1)), ("[[C]]", (True, None)), ("A. It is clearer.", (True, 0)),
    ("Tie: both fine", (True, None)), ("a good answer overall", (False, None)), ("neither", (False, None)),
])
def test_parse_verdict(reply, expected):
    assert parse_verdict(reply) == expected


def test_template_leaves_json_braces_alone_and_fills_variables():
    t = Template('Q: {prompt} A: {completion} -> {"score": n}', "t.txt", system="judge {task}")
    msgs = t.render({"prompt": "1+1", "completion": "2", "task": "math"})
    assert msgs == [{"role": "system", "content": "judge math"},
                    {"role": "user", "content": 'Q: 1+1 A: 2 -> {"score": n}'}]
    assert t.variables == ["completion", "prompt", "task"]


def test_template_undefined_variable_message():
    with pytest.raises(UserError, match=r"^judge template t\.txt: undefined variable '\{answer\}' \(available: completion, prompt\)$"):
        Template("{answer}", "t.txt").render({"prompt": "p", "completion": "c"})


def test_rate_limiter_spaces_requests_past_the_per_minute_budget(monkeypatch):
    clock = {"t": 0.0}
    sleeps = []
    monkeypatch.setattr(time, "monotonic", lambda: clock["t"])

    async def fake_sleep(s):
        sleeps.append(s)
        clock["t"] += s

    async def go():
        monkeypatch.setattr(asyncio, "sleep", fake_sleep)
        lim = RateLimiter(rpm=2, tpm=None)
        for _ in range(3):
            await lim.acquire(10)
    asyncio.run(go())
    assert sleeps == [60.0]  # the third request waits until the first leaves the one-minute window


def test_rate_limiter_token_budget(monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setattr(time, "monotonic", lambda: clock["t"])
    waited = []

    async def fake_sleep(s):
        waited.append(s)
        clock["t"] += s

    async def go():
        monkeypatch.setattr(asyncio, "sleep", fake_sleep)
        lim = RateLimiter(rpm=None, tpm=100)
        await lim.acquire(60)
        clock["t"] = 10.0
        await lim.acquire(60)   # 120 > 100: waits until t = 60
    asyncio.run(go())
    assert waited == [50.0]


def test_circuit_breaker_opens_and_half_opens(monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setattr(time, "monotonic", lambda: clock["t"])
    b = CircuitBreaker(threshold=2, cooldown=10)
    b.record(False)
    assert b.allow()
    b.record(False)
    assert not b.allow() and b.trips == 1
    clock["t"] = 10.0
    assert b.allow() and not b.allow()   # one trial call after the cooldown, the rest still fail fast
    b.record(True)
    assert b.allow() and b.failures == 0
