"""``python probed_frl.py frl-args...``: the real ``frl`` command line, with a probe that writes where the run's
models were at the end of each step to the JSONL file named by ``FRL_GPU_PROBE``.

No hook receives the policy (hooks observe a run, they do not reach into it), so the probe finds every
live ``transformers`` model through the garbage collector: the policy and any reference, critic or reward
model the engine or a source built. Each line: ``stage``, ``step``, ``devices`` (the devices their
parameters are on, sorted), ``cuda_allocated`` and ``cuda_peak`` (bytes, from torch's caching allocator).
It also runs under ``accelerate launch`` (a script accelerate starts like any other).

The tests in this folder import :func:`probed_frl` from here.
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import feedback_rl


def probed_frl(*args: str | Path, cwd: Path, probe: Path, launcher: tuple[str, ...] = (),
               timeout: int = 600) -> subprocess.CompletedProcess:
    """``frl ARGS`` through this probe in ``cwd``; with ``launcher`` (e.g. ``accelerate launch`` and its flags)
    in front of the script instead of the plain interpreter."""
    env = {**os.environ, "FRL_GPU_PROBE": str(probe), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "4")}
    head = list(launcher) if launcher else [sys.executable]
    return subprocess.run([*head, __file__, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


class DeviceProbe:
    def __init__(self, path: Path) -> None:
        self.path = path

    @feedback_rl.hookimpl
    def frl_step_end(self, stage: str, step: int, metrics: dict) -> None:
        import torch
        from transformers import PreTrainedModel
        devices = set()
        gc.collect()   # a model dropped earlier (an earlier stage's) is not counted as one of this step's
        for obj in gc.get_objects():
            if isinstance(obj, PreTrainedModel):
                devices |= {str(p.device) for p in obj.parameters()}
        cuda = torch.cuda.is_available()
        line = {"stage": stage, "step": step, "devices": sorted(devices),
                "cuda_allocated": torch.cuda.memory_allocated() if cuda else 0,
                "cuda_peak": torch.cuda.max_memory_allocated() if cuda else 0}
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")


def main() -> None:
    from feedback_rl.commands.cli import main as frl_main
    from feedback_rl.plugins import default
    default()[0].register(DeviceProbe(Path(os.environ["FRL_GPU_PROBE"])), name="gpu-device-probe")
    sys.exit(frl_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
