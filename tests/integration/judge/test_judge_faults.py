"""The judge against a fault-injecting server: retries honoured, failures counted exactly, never a number."""
from __future__ import annotations

import asyncio
import time

import pytest

from conftest import FakeJudge, make_judge, rollout
from frl_plugins.serve.server import ServerThread


def test_transient_faults_are_retried_and_persistent_ones_are_errors_never_numbers(fake_server, tmp_path):
    completions = ([f"score={k} r429" for k in range(3)] + [f"score={k} r500" for k in range(3)]
                   + [f"score={k} slow" for k in range(2)] + [f"score={k} junk" for k in range(4)]
                   + [f"score={k} dead" for k in range(2)] + [f"score={k}" for k in range(6)])
    judge = make_judge(fake_server.url, tmp_path, max_retries=2, breaker_threshold=0)
    try:
        scores = judge.score([rollout(c) for c in completions])
        m = judge.metrics()
    finally:
        judge.close()
    by = dict(zip(completions, scores))
    for c, s in by.items():
        if "dead" in c:
            assert s.status == "error" and s.value is None and "HTTP 500" in s.reason
            assert fake_server.calls[c] == 3  # 1 + max_retries attempts, no more
        elif "junk" in c:
            assert s.status == "abstain" and s.value is None and "unparseable" in s.reason
        else:  # 429, 500 and timeouts once each: retried, then the real score
            assert s.status == "ok" and s.value == float(c.split()[0].split("=")[1]), c
    assert m["errors"] == 2 and m["abstains"] == 4 and m["parse_failures"] == 4
    assert m["rate_limited"] == 3 and m["timeouts"] == 2 and m["server_errors"] == 3 + 2 * 3
    assert m["requests"] == fake_server.total == len(completions) + 3 + 3 + 2 + 2 * 2
    # Retry-After: 0.2 s was honoured: the second attempt came at least that long after the first
    for c in completions:
        if "r429" in c:
            first, second = fake_server.times[c]
            assert second - first >= 0.2 - 0.01
    assert m["prompt_tokens"] > 0 and m["completion_tokens"] > 0


def test_on_parse_error_error_counts_unparseable_replies_as_errors(fake_server, tmp_path):
    judge = make_judge(fake_server.url, tmp_path, on_parse_error="error")
    try:
        scores = judge.score([rollout("junk 1"), rollout("score=3")])
        assert [s.status for s in scores] == ["error", "ok"]
        assert scores[0].value is None and judge.metrics()["errors"] == 1
    finally:
        judge.close()


def test_circuit_breaker_fails_fast_after_consecutive_failures(fake_server, tmp_path):
    judge = make_judge(fake_server.url, tmp_path, max_retries=0, breaker_threshold=3, breaker_cooldown=60,
                       concurrency=1)
    try:
        scores = judge.score([rollout(f"dead {k}") for k in range(10)])
        m = judge.metrics()
    finally:
        judge.close()
    assert all(s.status == "error" for s in scores)
    assert fake_server.total == 3 and m["breaker_rejected"] == 7 and m["breaker_trips"] == 1
    assert "circuit breaker open" in scores[-1].reason


def test_score_out_of_range_is_a_parse_failure(fake_server, tmp_path):
    judge = make_judge(fake_server.url, tmp_path, score_range=(0, 10))
    try:
        scores = judge.score([rollout("score=42"), rollout("score=7")])
    finally:
        judge.close()
    assert scores[0].status == "abstain" and scores[1].value == 7.0


def test_api_key_comes_from_the_named_variable_and_stays_out_of_describe(fake_server, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_JUDGE_KEY", "sk-secret-123")
    judge = make_judge(fake_server.url, tmp_path, api_key_env="FAKE_JUDGE_KEY")
    try:
        judge.score([rollout("score=1")])
        assert fake_server.auth == ["Bearer sk-secret-123"]
        assert "sk-secret-123" not in repr(judge.describe()) + repr(judge.metrics())
    finally:
        judge.close()


def test_missing_key_variable_is_a_user_error(tmp_path):
    from feedback_rl import UserError
    with pytest.raises(UserError, match="NO_SUCH_KEY_VAR is not set"):
        make_judge("http://127.0.0.1:9/v1", tmp_path, api_key_env="NO_SUCH_KEY_VAR")


def test_a_servers_retry_after_is_capped_by_backoff_max(tmp_path):
    # a server asking for 10 s between tries must not stall the step past the recipe's backoff_max
    fake = FakeJudge(retry_after=10.0)
    with ServerThread(fake.app()) as server:
        judge = make_judge(server.url, tmp_path, backoff_max=0.2, cache=False)
        try:
            start = time.monotonic()
            scores = judge.score([rollout("score=2 r429")])
            elapsed = time.monotonic() - start
            waits = judge.client.waits
        finally:
            judge.close()
    assert scores[0].value == 2.0 and waits == [0.2] and elapsed < 5.0


def test_an_unexpected_exception_in_a_call_is_an_error_score_and_releases_identical_requests(fake_server, tmp_path):
    # two identical requests share one call; the call dies with something other than CallFailed
    judge = make_judge(fake_server.url, tmp_path, cache=False)

    async def exploding(messages, **params):
        await asyncio.sleep(0.05)  # the duplicate is waiting on the shared call by now
        raise RuntimeError("socket library bug")

    judge.client.chat = exploding
    try:
        scores = judge.score([rollout("score=1"), rollout("score=1")])
        pending = judge._on_loop(_other_tasks())
    finally:
        judge.close()
    assert [s.status for s in scores] == ["error", "error"]
    assert all("RuntimeError: socket library bug" in s.reason for s in scores)
    assert pending == 0  # nobody is left waiting on a call that will never answer


async def _other_tasks() -> int:
    return len(asyncio.all_tasks() - {asyncio.current_task()})
