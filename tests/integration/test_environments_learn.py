"""The built-in environments teach the tiny model something through `frl train` (the shipped recipes, one seed):
on guess_number the mean number of turns to solve falls; on calculator, after SFT on demonstrations, GRPO raises
the tool-call rate and held-out accuracy. The margins are measured over seeds 0-2 (docs/episodes.md,
"Learning on the built-in environments"); each test runs one seed, deterministically."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).parents[2]


def frl_train(recipe, tmp_path, *sets):
    args = [sys.executable, "-m", "feedback_rl.commands.cli", "train", str(ROOT / "recipes" / recipe),
            "--set", f"output_dir={tmp_path / 'runs'}", *[x for s in sets for x in ("--set", s)]]
    out = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    run = next((tmp_path / "runs").iterdir())
    return run, [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_guess_number_mean_turns_to_solve_fall_over_training(tmp_path):
    _, metrics = frl_train("guess-number-learn.yaml", tmp_path)
    turns = [m["env/turns_mean"] for m in metrics if "env/turns_mean" in m]
    assert len(turns) == 30
    first, last = sum(turns[:5]) / 5, sum(turns[-5:]) / 5
    # seeds 0, 1, 2 fell by 0.52, 0.32, 0.45 (3.95 -> 3.43, 3.92 -> 3.60, 3.82 -> 3.38). Untrained (seed 0 at
    # lr 1e-9) a step's turns_mean varies with std 0.08, the difference of two 5-step means with std 0.05
    # (measured: 3.95 -> 3.88). The bar, 0.2, is 4 of those from zero and below the smallest fall measured.
    assert last < first - 0.2, turns


def evals(metrics, stage):
    """The stage's held-out evals, before and after."""
    got = [m for m in metrics if m.get("stage") == stage and "eval/reward" in m]
    return got[0], got[-1]


def test_calculator_sft_then_grpo_raises_the_tool_call_rate_and_held_out_accuracy(tmp_path):
    # the longest test of the default tier (137 s on one thread, measured on a shared machine), kept there
    # because issue 20 asks for it: SFT must first teach the model to copy the operands into the call (about
    # 350 steps, suddenly), and no shorter recipe learned it (docs/episodes.md)
    _, metrics = frl_train("calculator-sft-grpo.yaml", tmp_path)
    before, after = evals(metrics, "grpo")
    # seeds 0, 1, 2 (50 held-out questions, greedy episodes): tool-call rate 0.18 -> 1.00, 0.66 -> 1.00,
    # 0.00 -> 1.00; accuracy 0.10 -> 0.82, 0.66 -> 1.00, 0.00 -> 0.80. The smallest rise, 0.34, is six
    # standard errors of a 50-question rate; the bar is 0.2 on both, and 0.5 for the accuracy after
    assert after["eval/env/tool_call_rate"] > before["eval/env/tool_call_rate"] + 0.2, (before, after)
    assert after["eval/env"] > before["eval/env"] + 0.2, (before, after)
    assert after["eval/env"] >= 0.5 and after["eval/env/tool_calls/ok"] == after["eval/env/tool_call_rate"]
