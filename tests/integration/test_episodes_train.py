"""GRPO trains on episodes through `frl train`: calculator episodes with a tool call and its result (written by
a scripted backend: an untrained tiny model calls no tool), and guess_number episodes sampled by the tiny model.
The ids trained are the ids the backend gave plus the environment's, which never train."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from transformers import AutoTokenizer

from plugin_site import install

ROOT = Path(__file__).parents[2]
HELPER = Path(__file__).with_name("scripted_tool_backend.py")


def frl_train(recipe, tmp_path, *sets, env=None):
    args = [sys.executable, "-m", "feedback_rl.commands.cli", "train", str(ROOT / "recipes" / recipe),
            "--set", f"output_dir={tmp_path / 'runs'}", *[x for s in sets for x in ("--set", s)]]
    out = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    assert out.returncode == 0, out.stderr[-3000:]
    run = next((tmp_path / "runs").iterdir())
    return run, [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()], \
        [json.loads(x) for x in (run / "rollouts.jsonl").read_text().splitlines()]


def runs(mask):
    """Maximal runs of equal mask values: (start, end, value)."""
    out, start = [], 0
    for j in range(1, len(mask) + 1):
        if j == len(mask) or mask[j] != mask[start]:
            out.append((start, j, mask[start]))
            start = j
    return out


def scripted_plugin(tmp_path):
    """The helper as an installed plugin, without touching the environment: a module and its dist-info on
    PYTHONPATH (importlib.metadata finds entry points on sys.path)."""
    site = install(tmp_path / "site", HELPER, "frl_scripted_tool", "scripted_tool")
    return {"PYTHONPATH": str(site), "FRL_SCRIPT_LOG": str(tmp_path / "script.jsonl")}


def test_grpo_trains_three_steps_on_calculator_episodes_with_a_tool_call_and_its_result(tmp_path):
    env = scripted_plugin(tmp_path)
    run, metrics, logged = frl_train("calculator-grpo.yaml", tmp_path, "stages.grpo.train.steps=3",
                                     "stages.grpo.rollout.backend=scripted_tool", env=env)
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    steps = [m for m in metrics if "env/turns_mean" in m]
    assert len(steps) == 3 and all(m["env/turns_mean"] == 2.0 and m["env/tool_calls/ok"] == 1.0 for m in steps)
    assert all(m["reward/env/error_rate"] == 0.0 and "loss" in m for m in steps)

    # rollouts.jsonl shows the turns: the call, the tool's result, the answer; and the reward the episode earned
    assert len(logged) == 3 * 2 * 4
    for r in logged:
        turns, info = r["episode"]["turns"], r["episode"]["infos"][0]["tool_calls"][0]
        assert [t["role"] for t in turns] == ["assistant", "tool", "assistant"]
        assert '<tool_call>{"name": "calculate"' in turns[0]["content"] and info["outcome"] == "ok"
        assert turns[1]["content"] == info["result"] and info["result"].isdigit()
        assert r["reward"] == (1.0 if turns[2]["content"] == info["result"] else 0.0)
    assert {r["reward"] for r in logged} == {0.0, 1.0}

    # the trained ids: each mask-1 run is what the backend gave for exactly the ids before it (cut at its stop),
    # each mask-0 run the environment's tool turn
    tok = AutoTokenizer.from_pretrained(run / "final")
    records = [json.loads(x) for x in Path(env["FRL_SCRIPT_LOG"]).read_text().splitlines()]
    given: dict[tuple, list] = {}
    for g in (x for x in records if x["kind"] == "generation"):
        given.setdefault(tuple(g["prompt"]), []).append(g["completion"])
    rollouts = [x for x in records if x["kind"] == "rollout"]
    assert len(rollouts) == len(logged)
    for r in rollouts:
        whole, p = r["prompt"] + r["completion"], len(r["prompt"])
        spans = runs(r["mask"])
        assert [v for _, _, v in spans] == [1, 0, 1]
        for a, b, v in spans:
            if v:
                assert r["completion"][a:b] in given[tuple(whole[:p + a])]
            else:
                assert "<|tool|>" in tok.decode(r["completion"][a:b])


def test_grpo_trains_on_guess_number_episodes_sampled_by_the_tiny_model(tmp_path):
    run, metrics, logged = frl_train("guess-number-grpo.yaml", tmp_path, "stages.grpo.train.steps=2")
    steps = [m for m in metrics if "env/turns_mean" in m]
    assert len(steps) == 2 and all(1.0 <= m["env/turns_mean"] <= 4.0 and "loss" in m for m in steps)
    several = [r for r in logged if len(r["episode"]["rewards"]) > 1]
    assert several, "no episode lasted more than one turn"
    for r in several:
        roles = [t["role"] for t in r["episode"]["turns"]]
        assert roles[:3] == ["assistant", "user", "assistant"]
        assert r["episode"]["turns"][1]["content"] in ("Higher.", "Lower.", "Answer with one whole number from 1 to 10.")


def test_an_opening_longer_than_the_context_is_one_line_before_any_step(tmp_path):
    # the tools' system turn alone is longer than 512 positions: no turn could be played, and a sequence past the
    # model's positions cannot be scored (it crashed in the first update with an IndexError)
    args = [sys.executable, "-m", "feedback_rl.commands.cli", "train", str(ROOT / "recipes" / "calculator-grpo.yaml"),
            "--set", f"output_dir={tmp_path / 'runs'}", "--set", "model.tiny.n_positions=512"]
    out = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("error: environment 'calculator': the opening of row 0 takes ") and \
        "its tools described in the system turn" in line and "in the model's 512 positions" in line, line
    assert not any((tmp_path / "runs").glob("*/checkpoints/*"))
