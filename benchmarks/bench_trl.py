"""This project against TRL, whole training loops side by side: GRPO, DPO and KTO.

Each (framework, optimizer, repeat) is a child process (``trl_child.py``), so its peak RSS is its
own. The two frameworks alternate (ours, TRL, ours, TRL, ...) over the repeats so that load on a
shared machine hits both alike. Both load the same HF folder (``bench_models.py``), train on the
same synthetic rows with the same batch, number of generations, completion length, temperature,
learning rate (constant), AdamW, clipping at 1 and loss settings, in float32 (TRL's default bf16
autocast and gradient checkpointing are turned off unless ``--trl-defaults``).

- GRPO: the quickstart's ``addition`` task, exact-match reward (the project's ``rule`` checker,
  wrapped as a TRL reward function), beta 0, ``--loss-type`` (dapo or grpo), one pass per batch.
- DPO (sigmoid, beta 0.1) on ``sort_pairs`` and KTO (beta 0.1) on ``sort_labeled``, as in
  ``bench_dpo_kto.py`` (which checks that the two losses agree on the same batch).

A step is the wall time between consecutive optimizer-step ends of the training loop (generation,
scoring, loss, backward, AdamW, logging); the first ``--warmup`` steps are not counted. Reported:
the median step of each run, the median over repeats, their ratio, and the peak RSS (median).
``--curves`` also plots the GRPO reward (exact match of the sampled completions) of the first
repeat against wall time (docs/img/bench-grpo-curves.png).

    .venv/bin/python benchmarks/bench_trl.py --optimizers grpo,dpo,kto --model tiny --steps 20 --repeats 3

``--workload smollm2-chat`` is the realistic one: SmolLM2-135M-Instruct, prompts rendered by the
tokenizer's chat template (about 55 tokens: its default system line, then the question), 64-token
completions, 8 prompts x 4 completions (DPO/KTO: 8 rows), 2 threads per side; GRPO rewards
'Answer: N' with the right sum (the ``rule`` source's ``final_answer`` check, both sides). Both
sides get the rendered text as a plain prompt, so they train on the same tokens. Ours runs in
``--precision``, TRL in its best configuration here (``--trl-bf16``: bf16 autocast, no gradient
checkpointing; without it, fp32). Besides the step it reports, for GRPO, generation tokens/s
(completion tokens / time generating and scoring) and update tokens/s (prompt + completion tokens
/ the rest of the step).

    .venv/bin/python benchmarks/bench_trl.py --workload smollm2-chat --optimizers grpo,dpo,kto --steps 4 --warmup 1 --repeats 3
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_models  # noqa: E402

DEFAULT_LR = {"grpo": 5e-5, "dpo": 1e-4, "kto": 1e-4}


def child(spec: dict, work: Path, threads: int) -> dict:
    spec_path = work / f"{spec['framework']}-{spec['optimizer']}.json"
    out = spec_path.with_suffix(".out.json")
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(HERE / "trl_child.py"), str(spec_path), str(out)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{spec['framework']} {spec['optimizer']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def step_times(ends: list[float], warmup: int) -> list[float]:
    steps = [ends[0]] + [b - a for a, b in zip(ends, ends[1:])]
    return steps[warmup:]


CHAT_QUESTION = "What is {a} plus {b}? End with the line: Answer: <number>"
CHAT_SORT = "Sort the letters {word} alphabetically. Reply with the letters only."
WORKLOADS = {"smollm2-chat": dict(model="smollm2", batch=8, generations=4, max_len=64, threads=2)}


def chat_rows(opt: str, model: Path, path: Path) -> Path:
    """The synthetic rows with each prompt rendered by the model's chat template (generation prompt on)."""
    from transformers import AutoTokenizer

    from feedback_rl.rows.synthetic import addition, sort_labeled, sort_pairs
    tok = AutoTokenizer.from_pretrained(model)

    def render(text: str) -> str:
        return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    if opt == "grpo":
        rows = [{**r, "prompt": render(CHAT_QUESTION.format(a=r["prompt"][:2], b=r["prompt"][3:5]))}
                for r in addition("train", 500, 100, 0)]
    else:
        made = sort_pairs("train", 500, 100, 0) if opt == "dpo" else sort_labeled("train", 500, 100, 0)
        rows = [{**r, "prompt": render(CHAT_SORT.format(word=r["prompt"].split()[1].rstrip(":")))} for r in made]
    lengths = sorted(len(tok(r["prompt"], add_special_tokens=False)["input_ids"]) for r in rows)
    print(f"  {opt}: chat prompts of {lengths[0]}-{lengths[-1]} tokens (median {lengths[len(lengths) // 2]})")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def bench(opt: str, a: argparse.Namespace, work: Path) -> dict:
    model = str(bench_models.model_for(a.model, opt))
    rows = str(chat_rows(opt, Path(model), work / f"{opt}-rows.jsonl")) if a.workload == "smollm2-chat" else None
    spec = {"optimizer": opt, "model": model, "steps": a.steps, "rows": rows, "precision": a.precision,
            "trl_bf16": a.trl_bf16,
            "batch": a.batch or (16 if opt == "grpo" else 16), "generations": a.generations,
            "max_len": a.max_len, "temperature": 1.0, "lr": a.lr or DEFAULT_LR[opt], "loss_type": a.loss_type,
            "beta": 0.0 if opt == "grpo" else 0.1, "dpo_loss": "sigmoid", "threads": a.threads, "seed": 0,
            "device": "cpu", "trl_defaults": a.trl_defaults, "backend": a.backend, "overlap": a.overlap,
            "padding_free": a.padding_free}
    runs: dict[str, list[dict]] = {"ours": [], "trl": []}
    for r in range(a.repeats):
        for fw in ("ours", "trl"):
            res = child({**spec, "framework": fw}, work, a.threads)
            steps = step_times(res["ends"], a.warmup)
            res["median_step_s"] = statistics.median(steps)
            res["load"] = os.getloadavg()
            rates = ""
            if res.get("gen_s"):
                gen = res["gen_s"][a.warmup:len(steps) + a.warmup]
                res["gen_tok_s"] = sum(res["gen_tokens"][a.warmup:][:len(gen)]) / sum(gen)
                res["update_tok_s"] = sum(res["update_tokens"][a.warmup:][:len(gen)]) / sum(
                    st - g for st, g in zip(steps, gen))
                rates = f", generation {res['gen_tok_s']:.1f} tok/s, update {res['update_tok_s']:.1f} tok/s"
            runs[fw].append(res)
            print(f"  {opt} repeat {r} {fw:<4}: median step {res['median_step_s'] * 1e3:8.1f} ms{rates}, "
                  f"peak RSS {res['peak_rss_mb']:6.0f} MB, run {res['wall_s']:.1f} s, "
                  f"load average {res['load'][0]:.1f} {res['load'][1]:.1f} {res['load'][2]:.1f}", flush=True)
    med = {fw: statistics.median(x["median_step_s"] for x in runs[fw]) for fw in runs}
    rss = {fw: statistics.median(x["peak_rss_mb"] for x in runs[fw]) for fw in runs}
    wall = {fw: statistics.median(x["wall_s"] for x in runs[fw]) for fw in runs}
    rates = {key: {fw: statistics.median(x[key] for x in runs[fw]) for fw in runs}
             for key in ("gen_tok_s", "update_tok_s") if all(key in x for fw in runs for x in runs[fw])}
    return {"optimizer": opt, "spec": spec, "median_step_s": med, "peak_rss_mb": rss, "wall_s": wall,
            "ratio": med["ours"] / med["trl"], "runs": runs, **rates}


def table(results: list[dict], a: argparse.Namespace) -> str:
    lines = ["| optimizer | batch | ours: median step | TRL: median step | ours / TRL | ours: peak RSS | TRL: peak RSS | "
             "whole run ours / TRL | generation tok/s ours / TRL | update tok/s ours / TRL |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        s = res["spec"]
        batch = f"{s['batch']} x {s['generations']}" if res["optimizer"] == "grpo" else str(s["batch"])
        lines.append(f"| {res['optimizer']} | {batch} | {res['median_step_s']['ours'] * 1e3:.0f} ms | "
                     f"{res['median_step_s']['trl'] * 1e3:.0f} ms | {res['ratio']:.2f} | "
                     f"{res['peak_rss_mb']['ours']:.0f} MB | {res['peak_rss_mb']['trl']:.0f} MB | "
                     f"{res['wall_s']['ours']:.1f} s / {res['wall_s']['trl']:.1f} s | "
                     + " | ".join(f"{res[k]['ours']:.0f} / {res[k]['trl']:.0f}" if k in res else "-"
                                  for k in ("gen_tok_s", "update_tok_s")) + " |")
    return "\n".join(lines)


def plot_curves(res: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def smooth(xs, k):
        return [statistics.fmean(xs[max(0, i - k + 1): i + 1]) for i in range(len(xs))]

    fig, ax = plt.subplots(figsize=(7, 4))
    for fw, label, color in (("ours", "feedback_rl", "tab:blue"), ("trl", "TRL GRPOTrainer", "tab:orange")):
        run = res["runs"][fw][0]
        n = min(len(run["ends"]), len(run["rewards"]))
        t, r = run["ends"][:n], run["rewards"][:n]
        ax.plot(t, r, color=color, alpha=0.25, linewidth=0.8)
        k = max(5, n // 15)   # a window wide enough to see a trend through the sampling noise
        ax.plot(t, smooth(r, k), color=color, label=f"{label} ({n} steps, mean of last {k})")
    ax.set_xlabel("wall time since training began (s)")
    ax.set_ylabel("exact match of sampled completions")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"curves: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workload", default="synthetic", choices=["synthetic", *WORKLOADS],
                    help="smollm2-chat: SmolLM2 on chat-template prompts, 64-token completions, 8 x 4, 2 threads")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="this project's train.precision")
    ap.add_argument("--trl-bf16", action="store_true", help="TRL with bf16 autocast on (gradient checkpointing off)")
    ap.add_argument("--backend", default="hf", choices=["hf", "vllm"],
                    help="our GRPO rollout backend (vllm: run this script from .venv-vllm, with trl installed there)")
    ap.add_argument("--overlap", type=int, default=0, choices=[0, 1],
                    help="our GRPO's rollout.overlap (1: the next batch generates while this one trains)")
    ap.add_argument("--padding-free", action="store_true", help="our train.padding_free (packed training forwards)")
    ap.add_argument("--optimizers", default="grpo,dpo,kto")
    ap.add_argument("--model", default="tiny", choices=["tiny", "smollm2"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2, help="first steps of each run not counted")
    ap.add_argument("--batch", type=int, default=None, help="prompts (GRPO) or rows (DPO, KTO) per step; default 16")
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=4, help="max completion tokens (GRPO)")
    ap.add_argument("--loss-type", default="dapo", choices=["dapo", "grpo"])
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trl-defaults", action="store_true", help="keep TRL's bf16 autocast and gradient checkpointing")
    ap.add_argument("--curves", type=Path, default=None, help="write the GRPO reward-vs-time PNG here")
    ap.add_argument("--json", type=Path, default=None, help="write all figures here")
    a = ap.parse_args()
    for key, value in WORKLOADS.get(a.workload, {}).items():
        if getattr(a, key) == ap.get_default(key):
            setattr(a, key, value)
    if a.steps <= a.warmup:
        raise SystemExit(f"--steps must exceed --warmup ({a.warmup})")
    import torch
    import transformers
    import trl
    header = (f"{datetime.date.today()}: torch {torch.__version__}, transformers {transformers.__version__}, "
              f"trl {trl.__version__}; model {a.model}, {a.steps} steps ({a.warmup} warm-up), {a.repeats} repeats, "
              f"{a.threads} thread(s), workload {a.workload}, ours {a.precision}, TRL {'bf16' if a.trl_bf16 else 'fp32'}, "
              f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(header, flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-trl-") as tmp:
        for opt in a.optimizers.split(","):
            results.append(bench(opt.strip(), a, Path(tmp)))
    print(f"\n(load average at the end {os.getloadavg()[0]:.1f})\n" + table(results, a))
    if a.curves is not None:
        grpo = next((r for r in results if r["optimizer"] == "grpo"), None)
        if grpo is None:
            raise SystemExit("--curves needs grpo in --optimizers")
        s = grpo["spec"]
        plot_curves(grpo, a.curves, f"GRPO on addition, {a.model}{' (after SFT)' if a.model == 'tiny' else ''}: {s['batch']} prompts x {s['generations']}, "
                                    f"lr {s['lr']:g}, {s['loss_type']}, {a.threads} CPU thread(s)")
    if a.json is not None:
        a.json.write_text(json.dumps({"header": header, "args": {k: str(v) for k, v in vars(a).items()},
                                      "results": results}, indent=1))


if __name__ == "__main__":
    main()
