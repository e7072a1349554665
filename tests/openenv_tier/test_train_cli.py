"""`frl train` on OpenEnv episodes, in a subprocess: GRPO on the tiny GPT-2 against the word game, in this
process (``env``) and behind a real local server (``url``). rollouts.jsonl shows each episode's turns and the
reward of each of its steps, as the environment gave it."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

pytest.importorskip("openenv", reason="the openenv tier: bash scripts/test.sh --openenv")

from openenv_helpers import HERE, word_game_server  # noqa: E402


def train(tmp_path, environment):
    shutil.copy(HERE / "word_game.py", tmp_path)   # beside the recipe: its folder is on sys.path for env
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"prompt": f"Say a word; a letter scores {m}.", "multiplier": m}) + "\n"
                                                 for m in (1, 2, 3, 4)))
    recipe = {"name": "openenv-grpo", "seed": 0, "output_dir": str(tmp_path / "runs"),
              "model": {"path": "builtin:tiny-gpt2", "tiny": {"n_positions": 512}},
              "stages": [{"name": "grpo", "optimizer": {"type": "grpo", "beta": 0.0},
                          "data": {"train": "rows.jsonl"},
                          "environment": {"type": "openenv", "max_turns": 3, "reset_columns": ["multiplier"],
                                          **environment},
                          "rewards": {"sources": [{"name": "env", "type": "environment"}]},
                          "rollout": {"num_generations": 2, "max_new_tokens": 6, "temperature": 1.0},
                          "train": {"steps": 2, "batch_size": 2}}]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "train", "r.yaml", "--no-progress"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "runs" / "openenv-grpo"
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return metrics, [json.loads(x) for x in (run / "rollouts.jsonl").read_text().splitlines()]


def check_episodes(metrics, logged):
    steps = [m for m in metrics if "env/turns_mean" in m]
    assert len(steps) == 2 and all(m["env/turns_mean"] == 3.0 and m["env/done_rate"] == 1.0 for m in steps)
    assert all(m["env/errors"] == 0.0 and "loss" in m for m in steps)
    assert len(logged) == 2 * 2 * 2
    for r in logged:
        ep, multiplier = r["episode"], int(re.search(r"a letter scores (\d)\.", r["prompt"]).group(1))
        said = [t["content"] for t in ep["turns"] if t["role"] == "assistant"]
        answers = [t["content"] for t in ep["turns"] if t["role"] == "user"]
        assert [t["role"] for t in ep["turns"]] == ["assistant", "user"] * 3 and ep["done"]
        # each step's own reward: that turn's word length times the row's multiplier, never a running sum
        assert ep["rewards"] == [float(len(s.strip()) * multiplier) for s in said]
        letters = [sum(len(s.strip()) for s in said[:t + 1]) for t in range(3)]
        assert [i["letters"] for i in ep["infos"]] == letters   # the environment kept the episode's state
        assert answers[0].startswith("Turn 1: ") and answers[2].startswith("Turn 3: ")
        assert r["reward"] == pytest.approx(sum(ep["rewards"]))   # the environment source scores the episode
    assert len({tuple(r["episode"]["rewards"]) for r in logged}) > 1


def test_grpo_trains_two_steps_on_an_in_process_openenv_environment(tmp_path):
    check_episodes(*train(tmp_path, {"env": "word_game:WordGame", "kwargs": {"rounds": 3}}))


def test_grpo_trains_two_steps_against_an_openenv_server(tmp_path):
    with word_game_server(max_concurrent_envs=4) as url:
        check_episodes(*train(tmp_path, {"url": url}))


def test_an_environment_that_does_not_import_stops_the_run_in_one_line(tmp_path):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({
        "name": "openenv-typo", "model": {"path": "builtin:tiny-gpt2"}, "output_dir": str(tmp_path / "runs"),
        "stages": [{"name": "grpo", "optimizer": "grpo", "data": {"train": {"guess_number": 10, "size": 20}},
                    "environment": {"type": "openenv", "env": "word_gam:WordGame"},
                    "rewards": {"sources": [{"name": "env", "type": "environment"}]},
                    "train": {"steps": 1, "batch_size": 2}}]}, sort_keys=False))
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "train", "r.yaml", "--no-progress"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 2 and "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: environment 'openenv': cannot import env 'word_gam:WordGame' (looked in "
                           f"{tmp_path.resolve()} and sys.path): ModuleNotFoundError: No module named 'word_gam'")
