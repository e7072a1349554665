"""train.precision: bf16 (and fp16 with its scaler) trains the tiny model as fp32 does, keeps fp32
weights and AdamW states, and resumes bit-identically."""
import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from feedback_rl.run import checkpoint as ckpt
from feedback_rl.commands.train import train_recipe

GRPO = """\
          - name: grpo
            optimizer: {{type: grpo, beta: 0.0, loss_type: dapo}}
            data: {{train: {{generator: addition}}}}
            rewards:
              sources:
                - {{name: digit, type: rule, check: regex, pattern: "[0-9]", mode: search}}
            rollout: {{num_generations: 8, max_new_tokens: 4}}
            train: {{steps: {steps}, batch_size: 8, lr: 3.0e-3, precision: {precision}}}
            eval: {{num_prompts: 4}}
            checkpoint: {{every: {every}}}
"""
DPO = """\
          - name: dpo
            optimizer: {{type: dpo, beta: 0.1}}
            data: {{train: {{generator: sort_pairs, split: train, holdout: 300}}}}
            train: {{steps: {steps}, batch_size: 32, lr: 1.0e-3, precision: {precision}}}
            eval: {{num_prompts: 4}}
"""


def recipe(tmp_path, stage: str, precision: str, steps: int, every: int = 0, name: str = "p"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nseed: 3\noutput_dir: {tmp_path / 'runs'}\nstages:\n"
                    + stage.format(precision=precision, steps=steps, every=every))
    return path


def metric(run_dir, key):
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [l[key] for l in lines if key in l]


# learning under half precision takes 2-3x fp32's time on a CPU that emulates it: the precision tier's
HALF = [pytest.param("bf16", marks=pytest.mark.precision), pytest.param("fp16", marks=pytest.mark.precision)]


@pytest.mark.parametrize("precision", ["fp32", *HALF])
def test_grpo_raises_the_reward_under_each_precision(tmp_path, precision):
    run, summary = train_recipe(recipe(tmp_path, GRPO, precision, steps=40))
    assert summary["status"] == "finished"
    rewards = metric(run.dir, "reward/digit/mean")
    first, last = sum(rewards[:8]) / 8, sum(rewards[-8:]) / 8
    assert last > first + 0.25, (precision, first, last)
    weights = load_file(run.dir / "final" / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}   # master weights stay fp32


@pytest.mark.parametrize("precision", ["fp32", *HALF[:1]])
def test_dpo_learns_the_margin_under_each_precision(tmp_path, precision):
    run, summary = train_recipe(recipe(tmp_path, DPO, precision, steps=30))
    assert summary["status"] == "finished"
    losses, acc = metric(run.dir, "loss"), metric(run.dir, "rewards/accuracy")
    assert all(math.isfinite(x) for x in losses)
    assert abs(losses[0] - math.log(2)) < 1e-3   # policy == reference at step 1 under autocast too
    assert sum(acc[-5:]) / 5 > 0.9 and losses[-1] < 0.5 * losses[0], (precision, acc[-5:], losses[-1])


def test_bf16_is_not_fp32_yet_close_to_it(tmp_path):
    # the autocast is really on: the first step's GRPO loss differs in the last bits, not in substance
    loss = {}
    for p in ("fp32", "bf16"):
        run, _ = train_recipe(recipe(tmp_path, GRPO, p, steps=1, name=f"one-{p}"))
        loss[p] = metric(run.dir, "entropy")[0]
    assert loss["fp32"] != loss["bf16"] and abs(loss["fp32"] - loss["bf16"]) < 0.05 * abs(loss["fp32"]), loss


def test_sigkill_then_resume_under_bf16_is_bit_identical(tmp_path):
    from test_resume import run_until_killed, train_steps   # tests/integration is on sys.path (no __init__)
    straight, _ = train_recipe(recipe(tmp_path / "a", GRPO, "bf16", steps=6, every=2))
    path = recipe(tmp_path / "b", GRPO, "bf16", steps=6, every=2)
    run_dir = tmp_path / "b" / "runs" / "p"
    run_until_killed(path, run_dir, 3)
    assert ckpt.latest(run_dir) is not None and not (run_dir / "final").exists()
    run, summary = train_recipe(path, resume=True)
    assert summary["status"] == "finished" and train_steps(run_dir) == list(range(1, 7))
    a, b = (load_file(d / "final" / "model.safetensors") for d in (straight.dir, run_dir))
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_a_bad_precision_is_one_line_naming_the_key(tmp_path):
    path = recipe(tmp_path, DPO, "int8", steps=1)
    done = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "train", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert "p.yaml:8: stages[0].train.precision:" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
