"""One recipe of tests/gpu/recipes trained through the real ``frl train`` (with the device probe), and what every
test of the tier checks of it: the run finished, every logged loss is finite and no step was skipped for a
non-finite one, and at the end of every step every model of the run was on the GPU.

``FRL_GPU_FIGURES`` (scripts/gpu-check.sh sets it) names a JSONL file that gets one line per run: the
recipe, wall time, median step time and peak CUDA memory, for docs/benchmarks.md.

The tests import :func:`train_on_gpu` from here.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from probed_frl import probed_frl

RECIPES = Path(__file__).resolve().parent / "recipes"
ON_GPU = ["cuda:0"]
MAXED = ("rollout/logprob_mismatch",)   # metrics whose largest value per run the figures keep


@dataclass
class Trained:
    run: Path              # the run folder
    metrics: list[dict]    # metrics.jsonl
    probes: list[dict]     # the probe's lines, one per step
    stdout: str

    def losses(self, stage: str | None = None) -> list[float]:
        return [m["loss"] for m in self.metrics if "loss" in m and (stage is None or m.get("stage") == stage)]


def train_on_gpu(recipe: str, tmp: Path, *args: str, label: str | None = None, launcher: tuple[str, ...] = (),
                 expect: list[str] = ON_GPU) -> Trained:
    """Train tests/gpu/recipes/``recipe`` in ``tmp`` with ``args`` after the recipe (``--set``s, flags) and
    check it as the tier does; ``expect`` is the probe's devices (a CPU smoke run of the harness passes
    ``["cpu"]``)."""
    tmp.mkdir(parents=True, exist_ok=True)
    probe = tmp / "probe.jsonl"
    t0 = time.perf_counter()
    out = probed_frl("train", RECIPES / recipe, "--no-progress", "--set", f"output_dir={tmp / 'runs'}", *args,
                     cwd=tmp, probe=probe, launcher=launcher)
    wall = time.perf_counter() - t0
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    assert "Traceback" not in out.stderr, out.stderr[-5000:]
    (run,) = (tmp / "runs").iterdir()
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "finished", status
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert losses and all(math.isfinite(x) for x in losses), losses
    skipped = [m for m in metrics if m.get("health/nonfinite_skips")]   # a step dropped for a NaN logs no loss
    assert not skipped, skipped
    probes = [json.loads(line) for line in probe.read_text().splitlines()] if probe.exists() else []
    assert probes, "the device probe saw no step end"
    off = [p for p in probes if p["devices"] != expect]
    assert not off, f"models not on {expect}: {off}"
    figures = os.environ.get("FRL_GPU_FIGURES")
    if figures:
        steps = [m["time/step_s"] for m in metrics if "time/step_s" in m]
        with open(figures, "a") as f:
            f.write(json.dumps({"run": label or recipe, "wall_s": round(wall, 2),
                                "step_s_median": round(statistics.median(steps), 4) if steps else None,
                                "cuda_peak_mib": round(max(p["cuda_peak"] for p in probes) / 2**20, 1),
                                "steps": len(probes),
                                **{k: max(m[k] for m in metrics if k in m) for k in MAXED
                                   if any(k in m for m in metrics)}}) + "\n")
    return Trained(run, metrics, probes, out.stdout)
