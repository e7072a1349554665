"""Step time on the GPU under each precision, through the real ``frl``: the GPU tier's GRPO (rule checker,
HF backend) and DPO (offline pairs) recipes on the tiny model, each for ``--steps`` steps in fp32 and in bf16.

The first steps are warm-up (CUDA context, kernels chosen, allocator grown) and are left out; the median
of the rest is the figure, with the machine's GPU named beside it. A tiny model measures the loop's own
cost per step on a GPU (launches, host work, synchronisation), not the GPU's arithmetic. Markdown to
stdout for docs/benchmarks.md; ``--json`` also writes the figures (scripts/gpu-check.sh puts them in $OUT).

    .venv-gpu/bin/python benchmarks/bench_gpu_steps.py --steps 30 --json gpu-check-out/bench.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"grpo": ROOT / "tests/gpu/recipes/grpo.yaml", "dpo": ROOT / "tests/gpu/recipes/dpo.yaml"}
WARMUP = 3


def step_times(recipe: Path, stage: str, precision: str, steps: int, out: Path) -> list[float]:
    cmd = [sys.executable, "-m", "feedback_rl.commands.cli", "train", str(recipe), "--no-progress",
           "--set", f"output_dir={out}", "--set", f"stages.{stage}.train.steps={steps}",
           "--set", f"stages.{stage}.train.precision={precision}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{stage} {precision}: frl train failed ({done.returncode}):\n{done.stderr[-3000:]}")
    (metrics,) = out.glob("*/metrics.jsonl")
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [r["time/step_s"] for r in rows if "time/step_s" in r]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    if args.steps <= WARMUP:
        raise SystemExit(f"--steps must be more than the {WARMUP} warm-up steps")
    import torch
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark measures the GPU")
    gpu = torch.cuda.get_device_name(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for stage, recipe in RECIPES.items():
            for precision in ("fp32", "bf16"):
                times = step_times(recipe, stage, precision, args.steps, Path(tmp) / f"{stage}-{precision}")[WARMUP:]
                rows.append({"recipe": stage, "precision": precision, "steps_timed": len(times),
                             "step_ms_median": 1000 * statistics.median(times)})
                print(f"{stage} {precision}: {rows[-1]['step_ms_median']:.1f} ms/step", file=sys.stderr, flush=True)
    print(f"{gpu}, torch {torch.__version__}, tiny GPT-2, {args.steps} steps ({WARMUP} warm-up left out)\n")
    print("| recipe | precision | median step (ms) |\n|---|---|---|")
    for r in rows:
        print(f"| {r['recipe']} | {r['precision']} | {r['step_ms_median']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"gpu": gpu, "torch": torch.__version__, "steps": args.steps,
                                         "warmup": WARMUP, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
