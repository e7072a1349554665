"""A judge URL nothing ever answered at is a wrong setting (one line naming the URL, exit code 2); a judge
that answered before and then drops is a judge having a bad day (error scores, counted)."""
import socket

import pytest

from feedback_rl import UserError
from frl_plugins.serve.server import ServerThread

from conftest import FakeJudge, make_judge, rollout


def _closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def test_nothing_answering_at_base_url_is_a_user_error_naming_it(tmp_path):
    url = _closed_url()
    judge = make_judge(url, tmp_path, cache=False, max_retries=1)
    try:
        with pytest.raises(UserError, match=rf"judge 'style': cannot connect to {url}: .*\(after 2 attempts\); "
                                            r"is the server running and base_url right\?"):
            judge.score([rollout("a"), rollout("b")])
    finally:
        judge.close()


def test_a_judge_that_answered_once_and_then_drops_gives_error_scores(tmp_path):
    fake = FakeJudge()
    server = ServerThread(fake.app())
    with server:
        url = server.url
        judge = make_judge(url, tmp_path, cache=False, max_retries=0)
        assert [s.value for s in judge.score([rollout("score=3")])] == [3.0]
    try:
        scores = judge.score([rollout("score=4")])  # the server is gone now
        assert scores[0].status == "error" and f"cannot connect to {url}" in scores[0].reason
    finally:
        judge.close()


def test_a_base_url_without_the_api_route_is_a_user_error_naming_it(tmp_path):
    fake = FakeJudge()
    with ServerThread(fake.app()) as server:
        url = server.url.removesuffix("/v1")  # the API lives under /v1: every call is a 404
        judge = make_judge(url, tmp_path, cache=False, max_retries=0)
        try:
            with pytest.raises(UserError, match=rf"judge 'style': HTTP 404 from {url}: .*; check base_url"):
                judge.score([rollout("score=3")])
        finally:
            judge.close()
