"""One-step-off rollouts (``rollout.overlap: 1``) on the tiny model: each batch after the first is
sampled by the weights one update old and corrected for it, and a run killed with a batch in flight
resumes bit-identically to one that never stopped (that the reward still rises one step off is in
test_grpo_training.py)."""
from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from test_resume import run_until_killed, train_steps, weights

from feedback_rl.commands.train import train_recipe

STEPS = 8


def recipe(path: Path, out: Path, overlap: int = 1, steps: int = STEPS, extra: str = "") -> Path:
    path.write_text(textwrap.dedent(f"""\
        name: overlapped
        seed: 11
        output_dir: {out}
        stages:
          - name: grpo
            optimizer: {{type: grpo, beta: 0.1}}
            data: {{train: {{generator: addition, size: 12}}}}
            rewards: {{sources: [{{name: digit, type: rule, check: regex, pattern: "[0-9]+", mode: search}}]}}
            rollout: {{num_generations: 4, max_new_tokens: 4, overlap: {overlap}{extra}}}
            train: {{steps: {steps}, batch_size: 5, lr: 1.0e-3}}
            checkpoint: {{every: 2, keep: 2}}
        """))
    return path


def metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]


def test_each_batch_after_the_first_is_one_update_old_and_importance_weighted(tmp_path):
    run, summary = train_recipe(recipe(tmp_path / "r.yaml", tmp_path / "runs"))
    assert summary["status"] == "finished"
    steps = metrics(run.dir)
    assert [s["rollout/staleness"] for s in steps] == [0.0] + [1.0] * (STEPS - 1)
    # the first batch came from the weights that train on it; every later one from the previous weights,
    # which differ (lr 1e-3): the backend's log-probs no longer match the trainer's, and the default
    # correction (is_cap 3.0) reports the ratio it weights by
    assert steps[0]["rollout/logprob_mismatch"] < 1e-6
    assert all(s["rollout/logprob_mismatch"] > 1e-3 for s in steps[1:])
    assert all("rollout/is_ratio_mean" in s and "time/rollout_wait_s" in s for s in steps)


def test_without_overlap_nothing_is_stale(tmp_path):
    run, _ = train_recipe(recipe(tmp_path / "r.yaml", tmp_path / "runs", overlap=0, extra=", logprob_mismatch: true"))
    steps = metrics(run.dir)
    assert all("rollout/staleness" not in s for s in steps)
    assert all(s["rollout/logprob_mismatch"] < 1e-5 for s in steps)


def test_sigkill_with_a_batch_in_flight_then_resume_is_bit_identical(tmp_path):
    straight, summary = train_recipe(recipe(tmp_path / "a.yaml", tmp_path / "a"))
    assert summary["status"] == "finished"
    killed = recipe(tmp_path / "b.yaml", tmp_path / "b")
    run_dir = tmp_path / "b" / "overlapped"
    kill_at = random.Random().randint(3, STEPS - 1)
    run_until_killed(killed, run_dir, kill_at)
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "train", str(killed), "--resume",
                          "--no-progress"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    a, b = weights(straight.dir), weights(run_dir)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"killed after step {kill_at}: {different}"
    assert train_steps(run_dir) == list(range(1, STEPS + 1))
    assert [s["rollout/staleness"] for s in metrics(run_dir)] == [0.0] + [1.0] * (STEPS - 1)


def test_overlap_on_a_stage_that_generates_nothing_is_one_line(tmp_path):
    path = tmp_path / "sft.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: offline
        output_dir: {tmp_path / 'runs'}
        stages:
          - name: sft
            optimizer: {{type: sft}}
            data: {{train: {{generator: addition, size: 8}}}}
            rollout: {{overlap: 1}}
            train: {{steps: 2, batch_size: 4}}
        """))
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "train", str(path)],
                         capture_output=True, text=True)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "stages[0].rollout.overlap" in lines[0] and "generates nothing" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_each_rank_of_a_two_process_run_overlaps_its_own_share(tmp_path):
    path = recipe(tmp_path / "r.yaml", tmp_path / "runs", steps=3)
    path.write_text(path.read_text().replace("batch_size: 5", "batch_size: 4"))
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "train", str(path), "--no-progress",
                          "--num-processes", "2"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    steps = metrics(tmp_path / "runs" / "overlapped")
    assert [s["rollout/staleness"] for s in steps] == [0.0, 1.0, 1.0]
    assert all(s["feedback/size"] == 16.0 for s in steps)   # both ranks' rollouts, 4 prompts x 4


def test_a_lora_policy_hands_its_adapter_over_with_each_batch(tmp_path):
    path = recipe(tmp_path / "r.yaml", tmp_path / "runs", steps=4)
    path.write_text(path.read_text().replace("output_dir:", "model: {path: 'builtin:tiny-gpt2', lora: {r: 8, alpha: 16}}\noutput_dir:"))
    run, summary = train_recipe(path)
    assert summary["status"] == "finished"
    steps = metrics(run.dir)
    # the worker's copy carries the adapter as it was handed over: one update old after step 1
    assert steps[0]["rollout/logprob_mismatch"] < 1e-6
    assert all(s["rollout/logprob_mismatch"] > 1e-4 for s in steps[1:]), [s["rollout/logprob_mismatch"] for s in steps]
