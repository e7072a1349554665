"""A checkpoint of a CUDA run holds the device's RNG, so a run stopped after step 1 and resumed samples step 2's
rollouts exactly as the run that never stopped: sampling on a GPU draws from the device's generator, which
the stage's reseeding at resume would otherwise reset. The stop is tests/integration/crash_at.py's
``term:grpo:1`` (SIGTERM to itself when step 1 ends: the run checkpoints and stops)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpu_run import RECIPES, train_on_gpu

pytestmark = pytest.mark.gpu

CRASH_AT = Path(__file__).resolve().parents[1] / "integration" / "crash_at.py"
EVERY_STEP = ("--set", "stages.grpo.checkpoint.every=1", "--set", "stages.grpo.checkpoint.keep=3")


def completions(run: Path, step: int) -> list[str]:
    rows = [json.loads(line) for line in (run / "rollouts.jsonl").read_text().splitlines()]
    return [r["completion"] for r in rows if r.get("step") == step and r.get("stage") == "grpo"]


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """The run that never stopped, with a checkpoint at every step."""
    return train_on_gpu("grpo.yaml", tmp_path_factory.mktemp("whole"), *EVERY_STEP,
                        label="grpo, checkpoint every step").run


def test_the_checkpoint_holds_the_cuda_rng(whole):
    state = torch.load(whole / "checkpoints" / "00-grpo-step0000001" / "trainer_state.pt", weights_only=False)
    assert len(state["rng"]["cuda"]) == torch.cuda.device_count()


def test_a_run_stopped_after_step_1_resumes_sampling_what_the_unstopped_run_sampled(whole, tmp_path):
    args = ["train", str(RECIPES / "grpo.yaml"), "--no-progress", "--set", f"output_dir={tmp_path / 'runs'}",
            *EVERY_STEP]
    stopped = subprocess.run([sys.executable, str(CRASH_AT), "term:grpo:1", *args], capture_output=True, text=True,
                             timeout=600)
    assert stopped.returncode != 0, stopped.stdout[-2000:]
    resumed = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", *args, "--resume"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = tmp_path / "runs" / whole.name
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert completions(run, 1) == completions(whole, 1)
    assert completions(run, 2) == completions(whole, 2) and completions(whole, 2)
