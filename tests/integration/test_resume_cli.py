"""Through the real ``frl`` command line, each way a run lost work (issue 13): ``--resume`` extending a
finished run, resuming with a changed recipe, resuming nothing as a fresh start, a stop message that
led into the wrong run, ``frl runs`` unable to tell running from killed, failed starts burning
folders, and a mistake in stage 2 costing stage 1 again."""
from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from crash_at import ENV, RULE, crashed, frl, tree_hash, two_stage_recipe
from safetensors.torch import load_file
from starlette.applications import Starlette

from frl_plugins.serve.server import ServerThread


def error_line(out: subprocess.CompletedProcess) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    return lines[0]


def status_of(runs: Path) -> dict[str, str]:
    out = frl("runs", "--dir", runs)
    assert out.returncode == 0, out.stderr
    return {line.split()[0]: line.split()[1] for line in out.stdout.splitlines()[1:]}


def sft_steps(run_dir: Path) -> list[int]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if r["stage"] == "sft" and "loss" in r]


def test_a_finished_run_is_never_resumed_and_the_refusal_says_how_to_go_on(tmp_path):
    runs = tmp_path / "runs"
    recipe = two_stage_recipe(tmp_path, runs)
    assert frl("train", recipe, "--no-progress").returncode == 0
    run = runs / "crash"
    before = tree_hash(run)
    bare = error_line(frl("train", recipe, "--resume"))
    assert bare.startswith("error: --resume: nothing to resume: every run of 'crash'") and f"(newest: {run})" in bare
    named = error_line(frl("train", recipe, "--resume", run))
    assert f"--resume {run}: that run finished" in named
    assert error_line(frl("train", "--resume", recipe)) == bare  # the flag before the recipe
    for line in (bare, named):
        assert f"`frl train {recipe}` (without --resume)" in line and f"--set model.path={run / 'final'}" in line
    assert tree_hash(run) == before and [d.name for d in runs.iterdir()] == ["crash"]
    assert status_of(runs) == {"crash": "finished"}
    # what the refusal proposes works: a new run that trains on from the finished one's model
    on = frl("train", recipe, "--no-progress", "--set", f"model.path={run / 'final'}")
    assert on.returncode == 0 and f"run: {runs / 'crash-2'}\n" in on.stdout, on.stderr[-2000:]
    assert tree_hash(run) == before


def test_a_changed_recipe_is_refused_naming_the_difference_and_free_keys_may_change(tmp_path):
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{a}+1=", "completion": str(a + 1)}) + "\n" for a in range(24)))
    runs = tmp_path / "runs"
    recipe = two_stage_recipe(tmp_path, runs, sft_data=str(data))
    assert crashed("stage-end:sft", "train", recipe, "--no-progress").returncode == -signal.SIGKILL
    run = runs / "crash"
    before = tree_hash(run)
    refused = {
        ("--set", "stages.sft.train.steps=6"): "stages[0].train.steps: 4 → 6",
        ("--set", "model.tiny.n_layer=2"): "model.tiny.n_layer: 1 → 2",
        ("--set", "seed=6"): "seed: 5 → 6",
        ("--set", "stages.sft.optimizer={type: sft, max_length: 16}"): "stages[0].optimizer.max_length: null → 16",
        ("--set", "stages.0.name=first"): "stages: sft, grpo → first, grpo (the run has begun sft)",
    }
    data.write_text(data.read_text() + json.dumps({"prompt": "9+9=", "completion": "18"}) + "\n")
    refused[()] = "stages[0].data.train: the file's content changed since the run started"
    for args, difference in refused.items():
        line = error_line(frl("train", recipe, "--resume", *args))
        assert line.startswith(f"error: cannot resume {run}: the recipe differs from the run's lock in {difference}"), line
    assert tree_hash(run) == before
    data.write_text("".join(data.read_text().splitlines(keepends=True)[:-1]))
    # a default named explicitly, how often it saves, and a stage not begun yet may all change
    out = frl("train", recipe, "--resume", "--no-progress", "--set", "stages.sft.optimizer={type: sft, max_length: null}",
              "--set", "stages.sft.checkpoint.keep=3", "--set", "stages.grpo.train.lr=0.02")
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"run: {run} (resuming from checkpoint 01-grpo-step0000000)" in out.stdout
    lock = yaml.safe_load((run / "recipe.lock.yaml").read_text())
    assert lock["resolved"]["stages"][1]["train"]["lr"] == 0.02  # the lock says what the run computed


def test_resume_with_nothing_to_resume_is_an_error_and_makes_no_folder(tmp_path):
    runs = tmp_path / "runs"
    line = error_line(frl("train", two_stage_recipe(tmp_path, runs), "--resume"))
    assert line == (f"error: --resume: nothing to resume: no run of 'crash' in {runs}; "
                    f"start a new run with `frl train {tmp_path / 'crash.yaml'}` (without --resume)")
    assert not runs.exists()


def test_sigterm_prints_the_exact_command_that_continues_the_run(tmp_path):
    two_stage_recipe(tmp_path, "runs")  # relative paths: the command is run again from the same folder
    args = ["train", "crash.yaml", "--set", "stages.grpo.train.lr=0.02", "--no-progress"]
    out = crashed("term:sft:3", *args, cwd=tmp_path)
    assert out.returncode == 1, out.stderr[-2000:]
    said = out.stderr.strip().splitlines()[-1]
    assert said == ("stopped: SIGTERM received: checkpoint saved at runs/crash/checkpoints/00-sft-step0000003; "
                    "continue with: frl train crash.yaml --set=stages.grpo.train.lr=0.02 --no-progress "
                    "--resume runs/crash")
    assert status_of(tmp_path / "runs") == {"crash": "interrupted"}
    command = shlex.split(said.split("continue with: ")[1])
    assert command[0] == "frl"
    again = frl(*command[1:], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "run: runs/crash (resuming from checkpoint 00-sft-step0000003)" in again.stdout
    assert sft_steps(tmp_path / "runs" / "crash") == [1, 2, 3, 4]
    assert status_of(tmp_path / "runs") == {"crash": "finished"}


def test_frl_runs_tells_a_running_run_from_a_killed_one_and_resume_leaves_a_running_one_alone(tmp_path):
    runs = tmp_path / "runs"
    recipe = two_stage_recipe(tmp_path, runs)
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("crash_at.py")), "wait:sft:2", "train",
                             str(recipe), "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=ENV)
    try:
        assert "PAUSED\n" in iter(proc.stdout.readline, ""), "the run ended before step 2"
        assert status_of(runs) == {"crash": "running"}
        line = error_line(frl("train", recipe, "--resume"))
        assert line.startswith(f"error: --resume: nothing to resume: {runs / 'crash'} is running (pid {proc.pid} on ")
        assert f"--resume {runs / 'crash'}: that run is still running (pid {proc.pid}" in \
            error_line(frl("train", recipe, "--resume", runs / "crash"))
    finally:
        proc.kill()
        proc.wait()
    assert status_of(runs) == {"crash": "killed"}


def test_a_run_that_fails_before_its_first_step_leaves_no_folder(tmp_path):
    from feedback_rl.modeling.tiny import build_tiny_gpt2
    model = build_tiny_gpt2(tmp_path / "model", n_layer=1, n_embd=16, n_head=2, n_positions=32)
    weights = model / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 3])  # a model that will not load (found only when loading it)
    long = tmp_path / "long.jsonl"              # a prompt longer than the model's context
    long.write_text(json.dumps({"prompt": "1+" * 40 + "=", "completion": "1"}) + "\n")
    runs = tmp_path / "runs"
    recipe = two_stage_recipe(tmp_path, runs)
    text = recipe.read_text().replace("path: builtin:tiny-gpt2, tiny: {n_layer: 1, n_embd: 16, n_head: 2, "
                                      "n_positions: 32}", f"path: {model}")
    recipe.write_text(text)
    for args in ([], [], ["--set", f"stages.sft.data.train={long}"]):
        if args:
            weights.write_bytes(good)
        out = frl("train", recipe, "--no-progress", *args)
        assert out.returncode != 0 and list(runs.iterdir()) == [], out.stderr[-2000:]
    out = frl("train", recipe, "--no-progress")
    assert out.returncode == 0 and f"run: {runs / 'crash'}\n" in out.stdout, out.stderr[-2000:]


def test_a_mistake_found_in_stage_2_is_fixed_and_resumed_without_training_stage_1_again(tmp_path):
    runs = tmp_path / "runs"
    # a server answers (so `frl train`'s probe passes) but no API lives at base_url: every call is a 404
    with ServerThread(Starlette()) as server:
        url = server.url
        judge = f"[{{name: judge, type: judge, base_url: '{url}', model: m, max_retries: 0, timeout: 2}}]"
        recipe = two_stage_recipe(tmp_path, runs, grpo_sources=judge)
        out = frl("train", recipe, "--no-progress")
    # no call ever got a reply: a wrong setting, exit code 2, found in stage 2 after stage 1 trained
    assert out.returncode == 2 and f"judge 'judge': HTTP 404 from {url}" in out.stderr, out.stderr[-2000:]
    run = runs / "crash"
    assert status_of(runs) == {"crash": "failed"}
    fixed = frl("train", recipe, "--resume", "--no-progress", "--set", f"stages.grpo.rewards.sources={RULE}")
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert f"run: {run} (resuming from checkpoint 01-grpo-step0000000)" in fixed.stdout
    assert sft_steps(run) == [1, 2, 3, 4]
    # the result is the fixed recipe's, as if it had run from the start
    straight = frl("train", two_stage_recipe(tmp_path, tmp_path / "straight"), "--no-progress")
    assert straight.returncode == 0, straight.stderr[-2000:]
    want = load_file(tmp_path / "straight" / "crash" / "final" / "model.safetensors")
    got = load_file(run / "final" / "model.safetensors")
    assert all(torch.equal(want[k], got[k]) for k in want)
