"""A shipped recipe's held-out metric before and after training, for several seeds, through the real ``frl``.

Each seed is one ``frl train RECIPE --set seed=S`` in a fresh output folder, run one after another (the
figures depend on threads and load: the thread count is printed with them). The table goes to stdout as
Markdown for docs/benchmarks.md; ``--json`` also writes the figures (the slow-tier test reads them).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_seeds.py recipes/smollm2-grpo.yaml --seeds 0 1 2
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_seeds.py recipes/smollm2-dpo.yaml --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FRL = str(Path(sys.executable).with_name("frl"))


def run_seed(recipe: Path, seed: int, out: Path, extra: list[str]) -> dict:
    t0 = time.perf_counter()
    cmd = [FRL, "train", str(recipe), "--set", f"seed={seed}", "--set", f"output_dir={out}", "--no-progress", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"seed {seed}: frl train failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    (status,) = out.glob("*/status.json")
    stages = json.loads(status.read_text())["stages"]
    return {"seed": seed, "minutes": (time.perf_counter() - t0) / 60, "stages": stages}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--metric", default="eval/correct", help="the eval metric of the table")
    ap.add_argument("--also", action="append", default=[], help="another eval metric to show before -> after "
                    "(repeatable), e.g. eval/env/tool_call_rate")
    ap.add_argument("--stage", default=None, help="the stage whose eval is shown (default: the last)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="more recipe overrides, KEY=VALUE")
    args = ap.parse_args()
    extra = [x for s in args.sets for x in ("--set", s)]
    threads = os.environ.get("OMP_NUM_THREADS", "(unset)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            r = run_seed(args.recipe, seed, Path(tmp) / f"seed{seed}", extra)
            stage = args.stage or list(r["stages"])[-1]
            r["before"] = r["stages"][stage]["eval_before"][args.metric]
            r["after"] = r["stages"][stage]["eval_after"][args.metric]
            # with eval.keep_best the "after" is the kept model's eval; the last step's eval is beside it
            kept = r["stages"][stage].get("kept_best")
            r["kept_step"] = kept["step"] if kept else None
            r["last"] = r["stages"][stage].get("last_eval", r["stages"][stage]["eval_after"])[args.metric]
            r["also"] = {m: [r["stages"][stage]["eval_before"][m], r["stages"][stage]["eval_after"][m]]
                         for m in args.also}
            rows.append(r)
            print(f"seed {seed}: {r['before']:.3f} -> {r['after']:.3f} in {r['minutes']:.1f} min", file=sys.stderr,
                  flush=True)
    gains = [r["after"] - r["before"] for r in rows]
    afters = [r["after"] for r in rows]
    summary = {"recipe": str(args.recipe), "metric": args.metric, "threads": threads, "seeds": rows,
               "mean_gain": statistics.mean(gains), "min_gain": min(gains),
               "spread_after": max(afters) - min(afters),
               "spread_before": max(r["before"] for r in rows) - min(r["before"] for r in rows)}
    print(f"`{args.recipe}`, held-out `{args.metric}`, OMP_NUM_THREADS={threads}\n")
    also = "".join(f" {m} |" for m in args.also)
    print(f"| seed | before | after (kept step) | last step | gain |{also} minutes |\n"
          f"|---|---|---|---|---|{'---|' * len(args.also)}---|")
    for r, g in zip(rows, gains):
        kept = "" if r["kept_step"] is None else f" (step {r['kept_step']})"
        cells = "".join(f" {a:.1%} -> {b:.1%} |" for a, b in r["also"].values())
        print(f"| {r['seed']} | {r['before']:.1%} | {r['after']:.1%}{kept} | {r['last']:.1%} | {g:+.1%} |{cells} "
              f"{r['minutes']:.1f} |")
    print(f"\nmean gain {summary['mean_gain']:+.1%}, smallest {summary['min_gain']:+.1%}; "
          f"seed-to-seed spread after training {summary['spread_after']:.1%}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
