"""Two CPU processes (gloo, through `frl train --num-processes 2`, i.e. accelerate launch) train like one,
and checkpoints move between 1 and 2 processes both ways.

With the same global batch, DDP averages the two halves' gradients, which is the full batch's
gradient for a loss that is a mean over pairs (DPO). The tolerance below, 1e-4 on each step's loss,
covers float32 summation order (the all-reduce adds in a different order from one process); a real
desync (a rank skipping a step, wrong sharding, unaveraged gradients) moves the loss by 1e-2 or more.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RECIPE = """
name: ddp
seed: 3
model: {path: "builtin:tiny-gpt2"}
stages:
  - name: dpo
    optimizer: {type: dpo, beta: 0.1}
    data: {train: {generator: sort_pairs, split: train, size: 256}}
    train: {steps: 6, batch_size: 8, lr: 1.0e-3, scheduler: constant}
    checkpoint: {every: 3, keep: 3}
  - name: grpo
    optimizer: {type: grpo, beta: 0.0}
    data: {train: {generator: addition, split: train, size: 64}}
    rewards: {sources: [{name: em, type: rule, check: exact}]}
    rollout: {num_generations: 4, max_new_tokens: 6}
    train: {steps: 2, batch_size: 4, lr: 1.0e-4}
"""
TOL = 1e-4
# every stage's end is a checkpoint too: with grpo's default keep of 2 the dpo step-3 one would go
KEEP = ("--set", "stages.grpo.checkpoint.keep=3")


def frl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", *args, "--no-progress"], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def as_killed_after_step_3(cwd: Path) -> None:
    """The finished 3-step run in ``cwd``, as the 6-step recipe killed after its step-3 checkpoint would
    have left it (the constant schedule makes their first 3 steps the same): later checkpoints, the
    outputs and the status go, and the lock is the 6-step recipe's (a finished run is never resumed)."""
    from feedback_rl.run import checkpoint as ckpt
    from feedback_rl.config.recipe import load
    from feedback_rl.run.folder import Run
    run = cwd / "runs" / "ddp"
    for later in ckpt.complete(run / "checkpoints"):
        if later.name != "00-dpo-step0000003":
            shutil.rmtree(later)
    (run / "checkpoints" / "latest").write_text("00-dpo-step0000003")
    for out in ("final", "stages"):
        shutil.rmtree(run / out)
    (run / "status.json").unlink()
    Run(run.name, run).write_lock(load(cwd / "recipe.yaml"), {})


def losses(run: Path, stage: str) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r.get("stage") == stage and "loss" in r}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ddp")
    (root / "one").mkdir()
    (root / "two").mkdir()
    for sub in ("one", "two"):
        (root / sub / "recipe.yaml").write_text(RECIPE)
    frl("train", "recipe.yaml", cwd=root / "one")
    two = frl("train", "recipe.yaml", "--num-processes", "2", "--set", "stages.dpo.train.steps=3", *KEEP,
              cwd=root / "two")
    status = json.loads((root / "two" / "runs" / "ddp" / "status.json").read_text())
    (root / "two-status.json").write_text(json.dumps(status))
    (root / "two-losses.json").write_text(json.dumps(losses(root / "two" / "runs" / "ddp", "dpo")))
    assert "status: finished" in two.stdout
    (root / "two-rollouts.jsonl").write_text((root / "two" / "runs" / "ddp" / "rollouts.jsonl").read_text())
    # the 2-process run's step-3 checkpoint, continued in ONE process to step 6
    as_killed_after_step_3(root / "two")
    # read before the resume: its later checkpoints (every stage's end is one) prune this one
    state = __import__("torch").load(root / "two" / "runs" / "ddp" / "checkpoints" / "00-dpo-step0000003" /
                                     "trainer_state.pt", weights_only=False)
    (root / "two-checkpoint-world.json").write_text(json.dumps(state["world_size"]))
    frl("train", "recipe.yaml", "--resume", cwd=root / "two")
    # and the other way: a 1-process step-3 checkpoint continued in TWO processes
    (root / "three").mkdir()
    (root / "three" / "recipe.yaml").write_text(RECIPE)
    frl("train", "recipe.yaml", "--set", "stages.dpo.train.steps=3", *KEEP, cwd=root / "three")
    as_killed_after_step_3(root / "three")
    frl("train", "recipe.yaml", "--resume", "--num-processes", "2", cwd=root / "three")
    return {"one": root / "one" / "runs" / "ddp", "two": root / "two" / "runs" / "ddp",
            "three": root / "three" / "runs" / "ddp", "root": root}


def test_two_processes_follow_the_one_process_loss_trajectory(runs):
    one = losses(runs["one"], "dpo")
    two = {int(k): v for k, v in json.loads((runs["root"] / "two-losses.json").read_text()).items()}
    assert sorted(two) == [1, 2, 3]
    assert one[3] < one[1] - 0.05, "DPO must learn in these steps, or the comparison shows nothing"
    for step in (1, 2, 3):
        assert abs(two[step] - one[step]) < TOL, (step, two[step], one[step])


def test_every_rank_ends_each_stage_with_identical_weights(runs):
    status = json.loads((runs["root"] / "two-status.json").read_text())
    assert status["status"] == "finished"
    for stage in ("dpo", "grpo"):  # offline pairs, then online generation + rule scoring on both ranks
        sums = status["stages"][stage]["rank_checksums"]
        assert len(sums) == 2 and sums[0] == sums[1], (stage, sums)


def test_a_two_process_checkpoint_resumes_in_one_process(runs):
    one = losses(runs["one"], "dpo")
    resumed = losses(runs["two"], "dpo")
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]  # steps 1-3 logged once by the 2-process run, 4-6 by the resumed one
    for step in (4, 5, 6):
        assert abs(resumed[step] - one[step]) < TOL, (step, resumed[step], one[step])
    assert json.loads((runs["root"] / "two-checkpoint-world.json").read_text()) == 2


def test_a_one_process_checkpoint_resumes_in_two_processes(runs):
    one = losses(runs["one"], "dpo")
    resumed = losses(runs["three"], "dpo")
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):
        assert abs(resumed[step] - one[step]) < TOL, (step, resumed[step], one[step])
    status = json.loads((runs["three"] / "status.json").read_text())
    assert status["status"] == "finished" and len(set(status["stages"]["dpo"]["rank_checksums"])) == 1


def test_rollouts_of_both_ranks_are_logged_once_by_rank_zero(runs):
    rows = [json.loads(line) for line in (runs["root"] / "two-rollouts.jsonl").read_text().splitlines()]
    grpo = [r for r in rows if r["stage"] == "grpo"]
    assert len(grpo) == 2 * 4 * 4  # steps x prompts x generations: both halves, no duplicates
    assert len({(r["step"], r["group"]) for r in grpo}) == 2 * 4
    # resuming from the DPO checkpoint replays the GRPO stage: its first rollouts are cut from the log
    again = [json.loads(line) for line in (runs["two"] / "rollouts.jsonl").read_text().splitlines()]
    assert len([r for r in again if r["stage"] == "grpo"]) == 2 * 4 * 4


def test_a_batch_the_processes_cannot_share_is_refused(tmp_path):
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "train", "recipe.yaml", "--num-processes", "2",
                          "--no-progress", "--set", "stages.dpo.train.batch_size=7"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 2, out.stderr  # refused before any process starts: one line, no traceback
    assert out.stderr.strip().splitlines() == [
        "error: recipe.yaml: stages[0].train.batch_size: 7 is not divisible by the 2 processes "
        "(each takes an equal share of the global batch)"]


def test_accelerate_launch_with_a_shipped_config_runs_the_same_entry_point(tmp_path):
    """What docs/scale.md tells cluster users to type, with the DDP config (2 CPU processes here)."""
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    config = Path(__file__).resolve().parents[2] / "recipes" / "accelerate" / "ddp.yaml"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                          "--num_processes", "2", "--mixed_precision", "no", "-m", "feedback_rl.commands.cli", "train",
                          "recipe.yaml", "--no-progress", "--set", "stages.dpo.train.steps=2",
                          "--set", "stages.grpo.train.steps=1"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("status: finished") == 1  # rank 0 reports for both
    status = json.loads((tmp_path / "runs" / "ddp" / "status.json").read_text())
    assert len(set(status["stages"]["dpo"]["rank_checksums"])) == 1
    assert len(status["stages"]["dpo"]["rank_checksums"]) == 2
