"""`frl check`: every source runs on a few rollouts; the judge's prompt and parsed reply are shown."""
from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from feedback_rl.commands.cli import main
from frl_plugins.serve.server import ServerThread

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "mixed-rule-judge.yaml"


def _server(seen: list):
    async def handle(request):
        seen.append((await request.json())["messages"][-1]["content"])
        return JSONResponse({"id": "x", "object": "chat.completion", "created": 0, "model": "m", "usage": None,
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": 'Clean. {"score": 7}'}}]})
    return ServerThread(Starlette(routes=[Route("/v1/chat/completions", handle, methods=["POST"])]))


def _args(url: str, *extra: str) -> list[str]:
    sets = [f"stages.grpo.rewards.sources.style.base_url={url}",
            # every rollout passes the gate, so the judge sees them all
            "stages.grpo.rewards.sources.correct.check=regex", "stages.grpo.rewards.sources.correct.pattern='(?s).*'",
            *extra]
    return ["check", str(RECIPE), "--prompts", "2", "--generations", "2"] + [a for s in sets for a in ("--set", s)]


def test_check_prints_each_source_and_the_judge_prompt_and_parsed_reply(capsys):
    seen: list[str] = []
    with _server(seen) as server:
        code = main(_args(server.url))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "== stage 'grpo': 4 rollouts" in out
    style_row = next(line for line in out.splitlines() if line.startswith("style "))
    assert style_row.split()[2:6] == ["4", "4", "0", "0"] and "7 7 7 7" in style_row
    assert "---- prompt sent:" in out and "Rate how cleanly this answer is written" in out
    assert "---- parsed: 7.0 (ok)" in out and "check: ok" in out
    assert len(seen) >= 1


def test_check_shows_a_broken_template_as_one_line_naming_template_and_variable(capsys, tmp_path):
    # a template variable no row has is the user's mistake: found before any model loads or call is made
    bad = tmp_path / "bad.txt"
    bad.write_text("Rate {completion} for {audience}")
    seen: list[str] = []
    with _server(seen) as server:
        code = main(_args(server.url, f"stages.grpo.rewards.sources.style.template_file={bad}"))
    cap = capsys.readouterr()
    assert code == 2, cap.out + cap.err
    assert cap.err.count("\n") == 1 and f"judge template {bad}: '{{audience}}' is no text or number field" in cap.err
    assert "==" not in cap.out and not seen


def test_check_fails_when_the_judge_server_is_down(capsys):
    # nothing ever answered at base_url: a wrong setting, named, exit code 2
    code = main(_args("http://127.0.0.1:9/v1", "stages.grpo.rewards.sources.style.max_retries=0"))
    err = capsys.readouterr().err
    assert code == 2 and "judge 'style': cannot connect to http://127.0.0.1:9/v1: " in err, err


def test_check_shows_the_prompt_as_the_policy_sees_it(capsys):
    with _server([]) as server:
        assert main(_args(server.url)) == 0
    out = capsys.readouterr().out
    from feedback_rl.rows.synthetic import GENERATORS
    first = GENERATORS["addition"]("train", None, 500, 0)[0]["prompt"]
    assert f"prompt as the policy sees it: {first!r}" in out.splitlines()   # a plain-string prompt, raw


def test_check_refuses_a_malformed_conversation_with_file_and_line(capsys, tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text('{"prompt": [{"role": "user", "content": "1+1="}], "answer": "2"}\n'
                    '{"prompt": [{"role": "user"}], "answer": "2"}\n')
    code = main(_args("http://127.0.0.1:9", f"stages.grpo.data.train={data}"))
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().endswith(f"{data}:2: prompt[0] has no 'content' (a turn is {{role, content}}; it has: "
                                "role)"), err
