"""What each lever of the leaner GRPO step gives on the realistic workload, one switched at a time.

The workload of ``bench_trl.py --workload smollm2-chat`` (SmolLM2-135M-Instruct, chat prompts of
about 55 tokens, 64-token completions, 8 prompts x 4, 2 threads), this project's side only: a base
configuration, then the same with one lever flipped, each run in a child process of its own
(``trl_child.py``), the configurations alternated over the repeats. Levers:

- ``generate``: the HF backend's ``engine: generate`` (``model.generate``) instead of its own loop;
- ``overlap``: ``rollout.overlap: 1`` (the next batch generates while this one trains);
- ``padding_free``: ``train.padding_free: true`` (packed training forwards);
- ``full_head``: the LM head and log-softmax on every position, not only completion targets;
- ``foreach_adamw``: torch's default AdamW instead of the fused kernel.

Reported per configuration: the median step, generation and update tokens/s, and the ratio to the base.

    .venv/bin/python benchmarks/bench_levers.py --steps 4 --warmup 1 --repeats 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_models  # noqa: E402
from bench_trl import chat_rows, child, step_times  # noqa: E402

LEVERS = {
    "base": {},
    "generate": {"engine": "generate"},
    "overlap": {"overlap": 1},
    "padding_free": {"padding_free": True},
    "full_head": {"off": ["target_head"]},
    "foreach_adamw": {"off": ["fused_adamw"]},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=",".join(LEVERS), help=f"comma-separated, of: {', '.join(LEVERS)}")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    names = a.configs.split(",")
    unknown = [n for n in names if n not in LEVERS]
    if unknown:
        raise SystemExit(f"unknown configuration {unknown}; choose from {', '.join(LEVERS)}")
    model = bench_models.model_for("smollm2", "grpo")
    work = Path(tempfile.mkdtemp(prefix="bench-levers-"))
    rows = str(chat_rows("grpo", Path(model), work / "rows.jsonl"))
    base = {"framework": "ours", "optimizer": "grpo", "model": str(model), "steps": a.steps, "rows": rows,
            "precision": "fp32", "batch": 8, "generations": 4, "max_len": 64, "temperature": 1.0, "lr": 1e-6,
            "loss_type": "dapo", "beta": 0.0, "threads": a.threads, "seed": 0, "device": "cpu"}
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(a.repeats):
        for name in names:
            res = child({**base, **LEVERS[name]}, work, a.threads)
            steps = step_times(res["ends"], a.warmup)
            gen = res["gen_s"][a.warmup:len(steps) + a.warmup]
            res.update(median_step_s=statistics.median(steps), load=os.getloadavg(),
                       gen_tok_s=sum(res["gen_tokens"][a.warmup:][:len(gen)]) / sum(gen),
                       update_tok_s=sum(res["update_tokens"][a.warmup:][:len(gen)]) / sum(
                           st - g for st, g in zip(steps, gen)))
            runs[name].append(res)
            print(f"  repeat {r} {name:<14}: median step {res['median_step_s']:6.1f} s, generation "
                  f"{res['gen_tok_s']:5.1f} tok/s, update {res['update_tok_s']:5.1f} tok/s, peak RSS "
                  f"{res['peak_rss_mb']:6.0f} MB, load {res['load'][0]:.1f}", flush=True)
    med = {n: statistics.median(x["median_step_s"] for x in runs[n]) for n in names}
    ref = med.get("base", med[names[0]])
    print(f"\n{a.threads} threads, {a.steps} steps ({a.warmup} warm-up), {a.repeats} repeats alternated\n")
    print("| configuration | median step | vs base | generation tok/s | update tok/s | peak RSS |")
    print("|---|---:|---:|---:|---:|---:|")
    for n in names:
        g = statistics.median(x["gen_tok_s"] for x in runs[n])
        u = statistics.median(x["update_tok_s"] for x in runs[n])
        rss = statistics.median(x["peak_rss_mb"] for x in runs[n])
        print(f"| {n} | {med[n]:.1f} s | {med[n] / ref:.2f} | {g:.0f} | {u:.0f} | {rss:.0f} MB |")
    if a.json:
        a.json.write_text(json.dumps({"median_step_s": med, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
