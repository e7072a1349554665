"""What a user sees from the real `frl train` and `frl check` when the judge misbehaves: one line and exit
code 2 for a wrong setting, a stopped run (never "finished") for a judge that fails every call."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import yaml
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from frl_plugins.serve.server import ServerThread

HTML = "<!DOCTYPE html><html><head><title>Welcome to nginx!</title></head><body>It works</body></html>"


def _recipe(folder: Path, judge: dict, optimizer: str = "grpo") -> Path:
    """One online stage on the tiny built-in model whose only reward is the judge ``judge``."""
    source = {"name": "critic", "type": "judge", "model": "judge", "template": "{completion}", "max_retries": 0,
              "cache": False, **judge}
    if source.get("mode") == "pairwise":
        source["template"] = "{completion_a} | {completion_b}"
    recipe = {"name": "judged", "seed": 0, "model": {"path": "builtin:tiny-gpt2"}, "output_dir": str(folder / "runs"),
              "stages": [{"name": "rl", "optimizer": {"type": optimizer},
                          "data": {"train": {"generator": "addition", "split": "train"}},
                          "rewards": {"max_error_rate": 0.5, "sources": [source]},
                          "rollout": {"num_generations": 2, "max_new_tokens": 2},
                          "train": {"steps": 2, "batch_size": 4}}]}
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _frl(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


def _one_error_line(out: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in out.stderr, out.stderr
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, out.stderr
    return lines[0]


def _html_server() -> ServerThread:
    """A web server that is not an OpenAI-compatible API (what a wrong base_url usually reaches)."""
    async def page(request):
        return HTMLResponse(HTML)
    return ServerThread(Starlette(routes=[Route("/{path:path}", page, methods=["GET", "POST"])]))


def test_a_judge_answering_html_is_one_line_saying_what_came_back_in_check_and_train(tmp_path):
    with _html_server() as server:
        url = server.url
        recipe = _recipe(tmp_path, {"base_url": url})
        checked = _frl("check", recipe, "--prompts", "2", "--generations", "2")
        trained = _frl("train", recipe, "--no-progress")
    for out in (checked, trained):
        line = _one_error_line(out)
        assert out.returncode == 2, out.stderr
        assert f"judge 'critic': {url}/chat/completions answered text/html, not JSON" in line, line
        assert "'<!DOCTYPE html><html><head><title>Welcome" in line and "check base_url" in line, line
        assert "AttributeError" not in line


def _failing_server(seen: list) -> ServerThread:
    """An API that answers, but fails every judgment (an overloaded or broken judge, not a wrong setting)."""
    async def fail(request):
        seen.append(await request.json())
        return JSONResponse({"error": {"message": "model overloaded"}}, status_code=503)
    return ServerThread(Starlette(routes=[Route("/v1/chat/completions", fail, methods=["POST"])]))


def test_a_pairwise_judge_failing_every_call_stops_the_run_past_max_error_rate(tmp_path):
    seen: list = []
    with _failing_server(seen) as server:
        recipe = _recipe(tmp_path, {"base_url": server.url, "mode": "pairwise"}, optimizer="dpo")
        out = _frl("train", recipe, "--no-progress")
    line = _one_error_line(out)
    assert out.returncode == 1 and seen, out.stderr
    assert line.startswith("stopped: reward source 'critic' failed on 4 of 4 pairs (100% > max_error_rate 50%)"), line
    assert "HTTP 503" in line and "model overloaded" in line, line
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "status.json").read_text())["status"] == "stopped"
def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def test_train_probes_a_judge_that_is_down_before_the_model_loads_and_leaves_no_run_folder(tmp_path):
    url = _closed_port_url()
    recipe = _recipe(tmp_path, {"base_url": url})
    out = _frl("train", recipe, "--no-progress")
    line = _one_error_line(out)
    assert out.returncode == 2
    assert line.startswith(f"error: judge 'critic' (stage 'rl'): nothing answers at {url}"), line
    assert "is the server running and base_url right?" in line
    assert "run:" not in out.stdout  # no run folder was opened, so no model was loaded either
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
