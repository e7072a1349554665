"""Kill a run with SIGKILL after a checkpoint, resume it: the weights are bit-identical to an
uninterrupted run, and metrics.jsonl has every step exactly once."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from feedback_rl.run import checkpoint as ckpt
from feedback_rl.commands.train import train_recipe
from feedback_rl.errors import UserError

STEPS = 8


REWARDS = 'rewards: {sources: [{name: digit, type: rule, check: regex, pattern: "[0-9]+", mode: search}]}'


def write_recipe(path: Path, out: Path, optimizer: str = "{type: grpo, beta: 0.1}", rewards: str = REWARDS) -> Path:
    path.write_text(textwrap.dedent(f"""\
        name: resumable
        seed: 11
        output_dir: {out}
        stages:
          - name: grpo
            optimizer: {optimizer}
            data: {{train: {{generator: addition, size: 12}}}}
            {rewards}
            rollout: {{num_generations: 4, max_new_tokens: 4}}
            train: {{steps: {STEPS}, batch_size: 5, lr: 1.0e-3}}
            checkpoint: {{every: 2, keep: 2}}
        """))
    return path


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "final" / "model.safetensors")


def train_steps(run_dir: Path) -> list[int]:
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [l["step"] for l in lines if "loss" in l or "feedback/size" in l]


def run_until_killed(recipe: Path, run_dir: Path, kill_after_step: int) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "feedback_rl.commands.cli", "train", str(recipe), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            steps = train_steps(run_dir) if (run_dir / "metrics.jsonl").exists() else []
            if steps and steps[-1] >= kill_after_step and ckpt.latest(run_dir) is not None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return
            if proc.poll() is not None:
                pytest.fail(f"the run ended before it was killed: {proc.stderr.read().decode()[-1500:]}")
            time.sleep(0.05)
        pytest.fail("the run never reached the step to kill at")
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("straight")
    run, summary = train_recipe(write_recipe(tmp / "r.yaml", tmp / "runs"))
    assert summary["status"] == "finished"
    return run.dir


def test_sigkill_then_resume_is_bit_identical_and_logs_each_step_once(uninterrupted, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "runs")
    run_dir = tmp_path / "runs" / "resumable"
    kill_at = random.Random().randint(3, STEPS - 1)
    run_until_killed(recipe, run_dir, kill_at)
    assert not (run_dir / "final").exists()
    run, summary = train_recipe(recipe, resume=True)
    assert run.dir == run_dir and summary["status"] == "finished"
    a, b = weights(uninterrupted), weights(run_dir)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"killed after step {kill_at}: {different}"
    assert train_steps(run_dir) == list(range(1, STEPS + 1))
    assert train_steps(uninterrupted) == list(range(1, STEPS + 1))
    rollouts = (run_dir / "rollouts.jsonl").read_text().splitlines()
    assert len(rollouts) == STEPS * 5 * 4


def test_only_the_newest_checkpoints_are_kept(uninterrupted):
    # the end of the stage is a checkpoint too (the one a resume after it starts from), and counts
    kept = [p.name for p in ckpt.complete(uninterrupted / "checkpoints")]
    assert kept == ["00-grpo-step0000008", "01-done"]


def test_a_crash_during_save_leaves_the_previous_checkpoint_as_latest(tmp_path, monkeypatch):
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "runs")
    real_save = torch.save
    calls = {"n": 0}

    def dying_save(obj, f, *a, **kw):
        if str(f).endswith("trainer_state.pt"):
            calls["n"] += 1
            if calls["n"] == 2:  # the second checkpoint dies half-written
                Path(f).write_bytes(b"partial")
                raise SystemExit("killed during save")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(SystemExit):
        train_recipe(recipe)
    monkeypatch.setattr(torch, "save", real_save)
    run_dir = tmp_path / "runs" / "resumable"
    assert ckpt.latest(run_dir).name == "00-grpo-step0000002"
    assert (run_dir / "checkpoints" / ".tmp-00-grpo-step0000004").exists()
    run, summary = train_recipe(recipe, resume=True)
    assert summary["status"] == "finished" and train_steps(run_dir) == list(range(1, STEPS + 1))


def killed_copy(run_dir: Path, out: Path) -> Path:
    """A copy of a finished run as it was when killed after its last step, before the stage ended."""
    copy = out / run_dir.name
    shutil.copytree(run_dir, copy)
    for later in ckpt.complete(copy / "checkpoints"):
        shutil.rmtree(later)
    shutil.copytree(run_dir / "checkpoints" / "00-grpo-step0000008", copy / "checkpoints" / "00-grpo-step0000008")
    (copy / "checkpoints" / "latest").write_text("00-grpo-step0000008")
    shutil.rmtree(copy / "final")
    (copy / "status.json").unlink()
    return copy


def test_resume_refuses_a_changed_optimizer_naming_the_difference(uninterrupted, tmp_path):
    killed_copy(uninterrupted, tmp_path / "runs")
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "runs", optimizer="{type: sft}", rewards="")
    with pytest.raises(UserError, match=r"stages\[0\]\.optimizer\.type: 'grpo' → 'sft'"):
        train_recipe(recipe, resume=True)


def test_resume_refuses_a_finished_run(uninterrupted):
    recipe = write_recipe(uninterrupted.parent.parent / "again.yaml", uninterrupted.parent)
    with pytest.raises(UserError, match=r"nothing to resume: every run of 'resumable' .* finished"):
        train_recipe(recipe, resume=True)


def test_resume_with_no_run_is_an_error_not_a_fresh_start(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "runs")
    with pytest.raises(UserError, match="nothing to resume: no run of 'resumable'"):
        train_recipe(recipe, resume=True)
    assert not (tmp_path / "runs").exists()


def test_a_run_killed_before_its_first_checkpoint_starts_over_in_its_own_folder(uninterrupted, tmp_path):
    copy = killed_copy(uninterrupted, tmp_path / "runs")
    shutil.rmtree(copy / "checkpoints")  # killed after 5 steps, before any checkpoint
    said = []
    run, summary = train_recipe(write_recipe(tmp_path / "r.yaml", tmp_path / "runs"), resume=True, say=said.append)
    assert said[0] == f"run: {copy} (resuming from the beginning: it had no checkpoint yet)"
    assert run.dir == copy and summary["status"] == "finished"
    assert train_steps(copy) == list(range(1, STEPS + 1))
    a, b = weights(uninterrupted), weights(copy)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ppo_stage_resumes_bit_identically_with_its_critic_and_kl_controller(tmp_path):
    ppo = "{type: ppo, kl_coef: 0.1, target_kl: 0.5, ppo_epochs: 2, num_minibatches: 2}"
    straight = write_recipe(tmp_path / "a.yaml", tmp_path / "a", optimizer=ppo)
    run, summary = train_recipe(straight)
    assert summary["status"] == "finished"
    killed = write_recipe(tmp_path / "b.yaml", tmp_path / "b", optimizer=ppo)
    run_dir = tmp_path / "b" / "resumable"
    run_until_killed(killed, run_dir, random.Random().randint(3, STEPS - 1))
    assert (ckpt.latest(run_dir) / "critic.pt").exists()
    train_recipe(killed, resume=True)
    a, b = weights(run.dir), weights(run_dir)
    assert not [k for k in a if not torch.equal(a[k], b[k])]
    assert train_steps(run_dir) == list(range(1, STEPS + 1))
    kl_a = [json.loads(l).get("kl_coef") for l in (run.dir / "metrics.jsonl").read_text().splitlines()]
    kl_b = [json.loads(l).get("kl_coef") for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert kl_a == kl_b
