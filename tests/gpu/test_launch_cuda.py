"""GRPO on CUDA started the ways a user starts it besides a plain ``frl train``: ``frl train --num-processes 1``,
a user's own ``accelerate launch --num_processes 1`` of the same entry point, and with rollouts from the vLLM
backend. Each is two bf16 steps through the real command line, every model on the GPU."""
import math
import sys

import pytest

from gpu_run import train_on_gpu

pytestmark = pytest.mark.gpu

ACCELERATE = (sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no")


def test_frl_train_with_one_process_trains_on_cuda(tmp_path):
    trained = train_on_gpu("grpo.yaml", tmp_path, "--num-processes", "1", label="grpo --num-processes 1")
    assert len(trained.losses("grpo")) == 2


def test_accelerate_launch_with_one_process_trains_on_cuda(tmp_path):
    trained = train_on_gpu("grpo.yaml", tmp_path, launcher=ACCELERATE, label="grpo under accelerate launch")
    assert len(trained.losses("grpo")) == 2


@pytest.mark.vllm
def test_grpo_with_the_vllm_backend_trains_on_cuda(tmp_path):
    trained = train_on_gpu("vllm.yaml", tmp_path, label="grpo, vLLM backend")
    assert len(trained.losses("grpo")) == 2
    # the trainer's and vLLM's log-probs of the same tokens, logged per step (the figure goes to the
    # benchmarks page; its bound is tests/gpu/test_vllm.py's and tests/vllm_tier's business)
    gaps = [m["rollout/logprob_mismatch"] for m in trained.metrics if "rollout/logprob_mismatch" in m]
    assert len(gaps) == 2 and all(math.isfinite(g) for g in gaps), gaps
