"""On a real CUDA device, a checkpoint's RNG state brings back the device's random stream (sampling and
dropout on a GPU draw from it, not from the CPU's generator)."""
import pytest
import torch

from feedback_rl.run import checkpoint as ckpt

pytestmark = pytest.mark.gpu


def test_the_cuda_random_stream_continues_from_the_checkpoint():
    torch.manual_seed(0)
    torch.rand(5, device="cuda")
    state = ckpt.rng_state()
    drawn = torch.rand(1000, device="cuda")
    torch.rand(77, device="cuda")  # the stream moves on, as a run's later steps would
    ckpt.set_rng_state(state)
    assert torch.equal(torch.rand(1000, device="cuda"), drawn)
