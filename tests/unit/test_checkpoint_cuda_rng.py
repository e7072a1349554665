"""A checkpoint holds each CUDA device's RNG where there is one and puts it back on resume (sampling on a GPU
draws from the device's generator, not the CPU's). This machine has no GPU, so torch.cuda is replaced by a
stand-in that keeps one generator state per device; tests/gpu/test_checkpoint_cuda.py checks the real one."""
import pytest
import torch

from feedback_rl.run import checkpoint as ckpt


class FakeCuda:
    def __init__(self, devices: int) -> None:
        self.states = [torch.tensor([d, 0], dtype=torch.uint8) for d in range(devices)]

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(self.states))
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in self.states])
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.set)

    def set(self, state: torch.Tensor, device: int = 0) -> None:
        self.states[device] = state.clone()


def test_each_devices_rng_is_saved_and_restored(monkeypatch):
    cuda = FakeCuda(2)
    cuda.install(monkeypatch)
    saved = ckpt.rng_state()
    assert [s.tolist() for s in saved["cuda"]] == [[0, 0], [1, 0]]
    cuda.states = [torch.tensor([9, 9], dtype=torch.uint8)] * 2     # sampling moved both generators on
    ckpt.set_rng_state(saved)
    assert [s.tolist() for s in cuda.states] == [[0, 0], [1, 0]]


@pytest.mark.parametrize("devices_here", [1, 3])
def test_a_checkpoint_from_another_device_count_restores_the_devices_both_have(monkeypatch, devices_here):
    saved = {**ckpt.rng_state(), "cuda": [torch.tensor([7, d], dtype=torch.uint8) for d in range(2)]}
    cuda = FakeCuda(devices_here)
    cuda.install(monkeypatch)
    ckpt.set_rng_state(saved)
    both = min(2, devices_here)
    assert [s.tolist() for s in cuda.states[:both]] == [[7, d] for d in range(both)]
    assert [s.tolist() for s in cuda.states[both:]] == [[d, 0] for d in range(both, devices_here)]


def test_a_cpu_checkpoint_resumes_where_there_is_a_gpu(monkeypatch):
    saved = ckpt.rng_state()     # no GPU here: no "cuda" entry
    assert "cuda" not in saved
    cuda = FakeCuda(1)
    cuda.install(monkeypatch)
    ckpt.set_rng_state(saved)
    assert cuda.states[0].tolist() == [0, 0]
