"""Judge modes over real HTTP: the cache, position swapping, reference-guided templates, template errors."""
from __future__ import annotations

import pytest

from conftest import make_judge, rollout
from feedback_rl import UserError
from feedback_rl.config.shapes import buildable


def test_a_rerun_makes_no_new_http_calls_for_cached_judgments(fake_server, tmp_path):
    items = [rollout(f"score={k}") for k in range(5)]
    first = make_judge(fake_server.url, tmp_path)
    try:
        a = first.score(items)
    finally:
        first.close()
    assert fake_server.total == 5
    second = make_judge(fake_server.url, tmp_path)  # a resumed run: same run_dir, a new process's source
    try:
        b = second.score(items + [rollout("score=9")])
        m = second.metrics()
    finally:
        second.close()
    assert fake_server.total == 6  # only the new judgment went over the wire
    assert [s.value for s in b[:5]] == [s.value for s in a] and b[5].value == 9.0
    assert m["cache_hits"] == 5 and m["cache_misses"] == 1


def test_failed_calls_are_not_cached(fake_server, tmp_path):
    judge = make_judge(fake_server.url, tmp_path, max_retries=0)
    try:
        assert judge.score([rollout("score=1 r500")])[0].status == "error"
        assert judge.score([rollout("score=1 r500")])[0].value == 1.0  # asked again, and now it answers
    finally:
        judge.close()
    assert fake_server.total == 2


def test_position_swap_turns_a_position_biased_judge_into_ties(fake_server, tmp_path):
    judge = make_judge(fake_server.url, tmp_path, mode="pairwise", template="biased {completion_a} | {completion_b}")
    assert judge.pairwise and buildable(type(judge).judgments(judge.options)) == {"pairs", "binary"}
    pairs = [(rollout(f"x{k}"), rollout(f"y{k}")) for k in range(6)]
    try:
        prefs = judge.compare(pairs)
    finally:
        judge.close()
    # the server always says "A": asked in both orders it contradicts itself, so no pair gets a winner
    assert len(prefs) == 6 and all(p.winner is None for p in prefs)
    assert fake_server.total == 12


def test_position_swap_keeps_a_consistent_preference(tmp_path):
    # A judge that prefers the longer completion whichever position it is in.
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from frl_plugins.serve.server import ServerThread

    async def handle(request):
        text = (await request.json())["messages"][-1]["content"]
        a, b = text.split(" | ")
        reply = '{"winner": "A"}' if len(a) > len(b) else '{"winner": "B"}' if len(b) > len(a) else '{"winner": "tie"}'
        return JSONResponse({"choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                          "finish_reason": "stop"}], "usage": None, "id": "x", "object": "chat.completion",
                             "created": 0, "model": "m"})

    with ServerThread(Starlette(routes=[Route("/v1/chat/completions", handle, methods=["POST"])])) as server:
        judge = make_judge(server.url, tmp_path, mode="pairwise", template="{completion_a} | {completion_b}")
        try:
            prefs = judge.compare([(rollout("long one"), rollout("s")), (rollout("s"), rollout("long one")),
                                   (rollout("same"), rollout("SAME"))])
        finally:
            judge.close()
    assert [p.winner for p in prefs] == [0, 1, None]


def test_reference_guided_template_gets_the_gold_answer_from_the_row(fake_server, tmp_path):
    judge = make_judge(fake_server.url, tmp_path, template="gold {answer} got {completion} score={answer}")
    try:
        s = judge.score([rollout("68", row={"prompt": "23+45=", "answer": "7"})])
        sent = judge.explain(1)[0]["messages"][-1]["content"]
    finally:
        judge.close()
    assert sent == "gold 7 got 68 score=7" and s[0].value == 7.0


def test_undefined_variable_is_a_one_line_error_naming_template_and_variable(fake_server, tmp_path):
    (tmp_path / "rubric.txt").write_text("Rate {completion} against {gold_answer}")
    judge = make_judge(fake_server.url, tmp_path, template=None, template_file="rubric.txt")
    try:
        with pytest.raises(UserError) as e:
            judge.score([rollout("x")])
    finally:
        judge.close()
    msg = str(e.value)
    assert "rubric.txt" in msg and "'{gold_answer}'" in msg and "\n" not in msg
    assert fake_server.total == 0


def test_describe_names_the_template_hash_and_changes_with_the_template(fake_server, tmp_path):
    one = make_judge(fake_server.url, tmp_path, template="A {completion}", cache=False)
    two = make_judge(fake_server.url, tmp_path, template="B {completion}", cache=False)
    try:
        assert len(one.describe()["template_sha256"]) == 16
        assert one.describe()["template_sha256"] != two.describe()["template_sha256"]
        assert one.describe()["variables"] == ["completion"]
    finally:
        one.close()
        two.close()
