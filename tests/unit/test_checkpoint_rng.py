"""A checkpoint holds every RNG a resumed run draws from: the CPU's, and each CUDA device's where there
is CUDA (restored only onto as many devices as it was saved from). The CUDA calls are stood in for here;
tests/gpu/test_gpu_checkpoint_rng.py draws from a real device."""
import random

import torch

from feedback_rl.run import checkpoint as ckpt


class FakeCuda:
    """torch.cuda with ``count`` devices whose generator states are strings."""

    def __init__(self, count: int):
        self.states = [f"device{k}" for k in range(count)]
        self.count = count

    def install(self, monkeypatch):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.count)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(self.states))
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: setattr(self, "states", list(states)))


def test_the_cpu_generators_are_restored():
    state = ckpt.rng_state()
    drawn = (random.random(), torch.rand(3))
    ckpt.set_rng_state(state)
    again = (random.random(), torch.rand(3))
    assert drawn[0] == again[0] and torch.equal(drawn[1], again[1])


def test_each_cuda_device_state_is_saved_and_restored(monkeypatch):
    cuda = FakeCuda(2)
    cuda.install(monkeypatch)
    state = ckpt.rng_state()
    assert state["cuda"] == ["device0", "device1"]
    cuda.states = ["moved0", "moved1"]
    ckpt.set_rng_state(state)
    assert cuda.states == ["device0", "device1"]


def test_cuda_states_are_not_restored_onto_another_device_count(monkeypatch):
    saved = FakeCuda(2)
    saved.install(monkeypatch)
    state = ckpt.rng_state()
    now = FakeCuda(1)
    now.install(monkeypatch)
    ckpt.set_rng_state(state)
    assert now.states == ["device0"]  # untouched: two saved states do not fit one device


def test_without_cuda_nothing_of_cuda_is_saved_or_restored(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    state = ckpt.rng_state()
    assert "cuda" not in state
    ckpt.set_rng_state({**state, "cuda": ["saved on a GPU machine"]})  # resumed on a CPU: the CPU state only
