"""The crash matrix: a two-stage run (SFT, then GRPO) SIGKILLed during stage 1, inside a checkpoint
write, at the stage boundary, during stage 2, and after the last stage, each time continued by
``frl train RECIPE --resume`` through the real CLI. Every case ends with the uninterrupted run's final
weights (``torch.equal``), its metrics.jsonl line for line (each step once), its rollouts, and every
other run folder byte for byte as it was. A LoRA run killed in stage 2 does the same.

Stage 2 saves no checkpoints of its own (``checkpoint.every: 0``): what it resumes from is the
end-of-stage checkpoint. Beside the killed run sit a finished run of the same recipe (what ``--resume``
once extended) and an older unfinished one with a higher number (``--resume`` takes the newest).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from crash_at import crashed, frl, tree_hash, two_stage_recipe
from safetensors.torch import load_file


def metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock figures."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/") and not k.endswith("latency_s")} for r in rows]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    folder = run_dir / "final"
    return load_file(folder / ("adapter_model.safetensors" if (folder / "adapter_config.json").exists()
                               else "model.safetensors"))


def uninterrupted(tmp: Path, lora: bool = False) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    out = frl("train", two_stage_recipe(tmp, tmp / "runs", lora=lora), "--no-progress")
    assert out.returncode == 0, out.stderr[-2000:]
    return tmp / "runs" / "crash"


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    return uninterrupted(tmp_path_factory.mktemp("straight"))


CASES = [  # where the run dies, and the checkpoint --resume must continue from
    ("step:sft:3", "00-sft-step0000002"),                 # during stage 1, after its step-2 checkpoint
    ("write:00-sft-step0000004", "00-sft-step0000002"),   # inside a checkpoint write
    ("write:01-grpo-step0000000", "00-sft-step0000004"),  # inside the end-of-stage checkpoint's write
    ("stage-end:sft", "01-grpo-step0000000"),             # at the boundary: stage 1 saved, stage 2 not begun
    ("step:grpo:2", "01-grpo-step0000000"),               # during stage 2, which saves no checkpoint itself
    ("stage-end:grpo", "02-done"),                        # after the last stage, before final/
]


@pytest.mark.parametrize("where,resumes_from", CASES, ids=[c[0] for c in CASES])
def test_a_killed_run_resumes_to_the_uninterrupted_result(straight, tmp_path, where, resumes_from):
    killed_and_resumed(straight, tmp_path, where, resumes_from)


def test_a_lora_run_killed_in_stage_2_resumes_from_the_boundary_to_the_uninterrupted_result(tmp_path):
    """The boundary checkpoint holds the SFT adapter (its stage output); the resumed run loads it on the
    base and folds it into a new base for GRPO exactly as the unbroken run did in memory."""
    killed_and_resumed(uninterrupted(tmp_path / "straight", lora=True), tmp_path, "step:grpo:2",
                       "01-grpo-step0000000", lora=True)


def killed_and_resumed(straight: Path, tmp_path: Path, where: str, resumes_from: str, lora: bool = False) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(straight, runs / "crash")                  # finished: never to be touched again
    shutil.copytree(straight, runs / "crash-5")                # older and unfinished: not the newest
    (runs / "crash-5" / "status.json").unlink()
    shutil.rmtree(runs / "crash-5" / "final")
    others = {d.name: tree_hash(d) for d in runs.iterdir()}
    recipe = two_stage_recipe(tmp_path, runs, lora=lora)

    died = crashed(where, "train", recipe, "--no-progress")
    assert died.returncode == -9, f"{where}: the run was not killed: {died.stderr[-2000:]}"
    run_dir = runs / "crash-2"
    assert not (run_dir / "final").exists() or where == "stage-end:grpo"
    assert {d.name: tree_hash(d) for d in runs.iterdir() if d.name in others} == others

    out = frl("train", recipe, "--resume", "--no-progress")
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"run: {run_dir} (resuming from checkpoint {resumes_from})" in out.stdout
    assert f"note: {runs / 'crash-5'} unfinished too" in out.stdout
    assert {d.name: tree_hash(d) for d in runs.iterdir() if d.name != "crash-2"} == others

    want, got = final_weights(straight), final_weights(run_dir)
    assert want.keys() == got.keys()
    assert [k for k in want if not torch.equal(want[k], got[k])] == []
    assert metrics(run_dir) == metrics(straight)
    steps = [(r["stage"], r["step"]) for r in metrics(run_dir) if "loss" in r]
    assert steps == [("sft", s) for s in range(1, 5)] + [("grpo", s) for s in range(1, 4)]
    assert (run_dir / "rollouts.jsonl").read_text() == (straight / "rollouts.jsonl").read_text()
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
