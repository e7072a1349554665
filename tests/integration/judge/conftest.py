"""Fixtures for the judge tests: a fault-injecting OpenAI-compatible server on 127.0.0.1.

The server reads markers in the last user message and behaves accordingly, so each test
knows exactly which faults it injected; it counts every request it receives.
"""
from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from feedback_rl import PluginContext, Rollout
from frl_plugins.rewards.judge import JudgeSource
from frl_plugins.serve.server import ServerThread


class FakeJudge:
    """Markers in the user message: ``score=N`` replies ``{"score": N}``; ``r429`` answers 429 with
    Retry-After once; ``r500`` answers 500 once; ``dead`` always 500; ``slow`` sleeps past the
    client's timeout once; ``junk`` replies unparseable text. ``biased`` (pairwise) always answers A."""

    def __init__(self, retry_after: float = 0.2, slow_s: float = 1.5, latency_s: float = 0.0):
        self.retry_after, self.slow_s, self.latency_s = retry_after, slow_s, latency_s
        self.calls: Counter[str] = Counter()   # attempts per user message
        self.times: dict[str, list[float]] = {}
        self.total = 0
        self.auth: list[str] = []

    async def handle(self, request: Request) -> JSONResponse:
        body = await request.json()
        text = body["messages"][-1]["content"]
        self.total += 1
        self.auth.append(request.headers.get("authorization", ""))
        self.calls[text] += 1
        self.times.setdefault(text, []).append(asyncio.get_running_loop().time())
        n = self.calls[text]
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if "r429" in text and n == 1:
            return JSONResponse({"error": {"message": "slow down"}}, status_code=429,
                                headers={"Retry-After": str(self.retry_after)})
        if ("r500" in text and n == 1) or "dead" in text:
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        if "slow" in text and n == 1:
            await asyncio.sleep(self.slow_s)
        if "junk" in text:
            reply = "I would rather not say."
        elif "biased" in text:
            reply = '{"winner": "A"}'
        elif m := re.search(r"score=(-?\d+(?:\.\d+)?)", text):
            reply = json.dumps({"score": float(m[1])})
        else:
            reply = '{"score": 5}'
        return JSONResponse({
            "id": "fake", "object": "chat.completion", "created": 0, "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(text), "completion_tokens": len(reply), "total_tokens": len(text) + len(reply)},
        })

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self.handle, methods=["POST"])])


@pytest.fixture
def fake_server():
    fake = FakeJudge()
    with ServerThread(fake.app()) as server:
        fake.url = server.url
        yield fake


def rollout(completion: str, prompt: str = "Q", row: dict | None = None, group: int = 0) -> Rollout:
    return Rollout(prompt=prompt, completion=completion, row=row or {"prompt": prompt}, group=group,
                   prompt_ids=[], completion_ids=[])


def make_judge(url: str, run_dir: Path, name: str = "style", **options) -> JudgeSource:
    opts = {"base_url": url, "model": "fake", "template": "{completion}", "timeout": 0.5,
            "backoff_base": 0.01, **options}
    return JudgeSource(JudgeSource.Options(**opts), PluginContext(name=name, run_dir=run_dir, recipe_dir=run_dir))
