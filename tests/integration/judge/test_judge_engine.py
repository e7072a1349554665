"""Whole runs (`frl train`) with the judge against servers of the tests' own, counted at the server."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import FakeJudge
from feedback_rl.commands.cli import main
from frl_plugins.serve.server import ServerThread

RECIPES = Path(__file__).resolve().parents[3] / "recipes"


def _train(recipe: str, out: Path, *sets: str) -> Path:
    args = ["train", str(RECIPES / recipe), "--no-progress", "--set", f"output_dir={out}",
            "--set", "stages.sft.train.steps=1", "--set", "stages.sft.eval.num_prompts=4"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_gated_out_rollouts_never_reach_the_judge_server(tmp_path):
    fake = FakeJudge()
    with ServerThread(fake.app()) as server:
        run = _train("mixed-rule-judge.yaml", tmp_path, f"stages.grpo.rewards.sources.style.base_url={server.url}",
                     "stages.grpo.train.steps=2", "stages.grpo.eval.num_prompts=4",
                     # an untrained policy is never right: "correct" here means "has a digit", right ~1/3 of the time
                     "stages.grpo.rewards.sources.correct.check=regex",
                     "stages.grpo.rewards.sources.correct.pattern='[0-9]'",
                     "stages.grpo.rewards.sources.correct.mode=search")
    rollouts = [r for r in _lines(run / "rollouts.jsonl") if r["stage"] == "grpo"]
    passed = [r for r in rollouts if r["scores"]["correct"]["value"] == 1.0]
    failed = [r for r in rollouts if r["scores"]["correct"]["value"] != 1.0]
    assert passed and failed, "the test needs both correct and wrong answers to mean anything"
    for r in failed:
        assert r["scores"]["style"] == {"status": "abstain", "value": None, "reason": "gated out by correct"}
    for r in passed:
        assert r["scores"]["style"]["status"] == "ok"
    # the style template's text for each correct answer, and nothing else, reached the server (cached repeats once)
    template = (RECIPES / "judge-templates" / "style.txt").read_text()
    sent = {template.replace("{prompt}", r["prompt"]).replace("{completion}", r["completion"]) for r in passed}
    assert set(fake.calls) == sent and fake.total == len(sent)


def _fault(text: str) -> str:
    """A fault per request text, at set rates, decided by a hash so the test can recompute it."""
    h = int(hashlib.sha256(text.encode()).hexdigest(), 16) % 100
    return "dead" if h < 10 else "junk" if h < 25 else "r429" if h < 40 else "r500" if h < 55 else "slow" if h < 62 else ""


class HashFaults(FakeJudge):
    async def handle(self, request):
        body = await request.json()
        text = body["messages"][-1]["content"]
        body["messages"][-1]["content"] = f"{text} {_fault(text)}"
        request._json = body  # the parent reads the marker it would have sent
        return await super().handle(request)


def test_a_run_against_a_faulty_server_completes_and_counts_every_fault_exactly(tmp_path):
    fake = HashFaults(retry_after=0.05, slow_s=0.6)
    with ServerThread(fake.app()) as server:
        run = _train("rlaif-local-judge.yaml", tmp_path, f"stages.rlaif.rewards.sources.judge.base_url={server.url}",
                     "stages.rlaif.rewards.sources.judge.template='{completion}'",
                     "stages.rlaif.rewards.sources.judge.template_file=null",
                     "stages.rlaif.rewards.sources.judge.score_range=null",
                     "stages.rlaif.rewards.sources.judge.timeout=0.3",
                     "stages.rlaif.rewards.sources.judge.backoff_base=0.01",
                     "stages.rlaif.rewards.sources.judge.max_retries=2",
                     "stages.rlaif.rewards.max_error_rate=0.5",
                     "stages.rlaif.train.steps=2", "stages.rlaif.eval.num_prompts=4")
    rollouts = [r for r in _lines(run / "rollouts.jsonl") if r["stage"] == "rlaif"]
    metrics = [m for m in _lines(run / "metrics.jsonl") if m.get("stage") == "rlaif" and "reward/judge/errors" in m]
    assert len(metrics) == 2
    expected_errors = sum(_fault(r["completion"]) == "dead" for r in rollouts)
    expected_abstains = sum(_fault(r["completion"]) == "junk" for r in rollouts)
    assert expected_errors and expected_abstains, "the sample must hit both kinds of fault"
    assert sum(m["reward/judge/errors"] for m in metrics) == expected_errors
    assert sum(m["reward/judge/abstains"] for m in metrics) == expected_abstains
    for r in rollouts:
        s, kind = r["scores"]["judge"], _fault(r["completion"])
        if kind == "dead":
            assert s["status"] == "error" and s["value"] is None and r["reward"] is None
        elif kind == "junk":
            assert s["status"] == "abstain" and s["value"] is None
        else:  # 429 (with Retry-After), 500 and timeouts once: retried until the real answer
            assert s["status"] == "ok" and s["value"] == 5.0
    assert any(n > 1 for n in fake.calls.values())  # retries happened at the server
    # the judge's own cumulative counters, logged by the engine under source/<name>/
    last = metrics[-1]
    assert last["source/judge/errors"] == expected_errors
    assert last["source/judge/parse_failures"] == expected_abstains
    assert last["source/judge/retries"] > 0 and last["source/judge/cost_usd"] == 0.0
