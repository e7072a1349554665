"""Generation on SmolLM2-135M-Instruct through the backend plugins the trainer uses: the HF backend's
decode loop (``engine: loop``) against ``model.generate`` (``engine: generate``), and vLLM when it imports.

The workload is bench_trl.py's smollm2-chat GRPO step: 8 distinct addition questions rendered by the
chat template, each repeated 4 times (adjacent, as the core lays out a group), 64 new tokens,
temperature 1, the core's stop tokens. Useful tokens are what the core keeps of a completion: up to
and including its first stop token. Contenders alternate, 3 repeats, each call seeded by its repeat;
medians at the end. vLLM's first call (engine build, weight push) is timed apart. ``--levers`` also
times the loop with each of its savings switched off in turn (the decode loop's private keywords).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_generate.py --levers
    OMP_NUM_THREADS=2 .venv-vllm/bin/python benchmarks/bench_generate.py --dtype float32   # with vLLM
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

LEVERS = {"loop, prefill per copy": dict(share_prefill=False),
          "loop, finished rows kept": dict(drop_finished=False),
          "loop, torch.multinomial": dict(inverse_cdf=False)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="vLLM's dtype")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=8, help="distinct prompts")
    ap.add_argument("--copies", type=int, default=4, help="rows per prompt (GRPO's num_generations)")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--levers", action="store_true", help="also the loop with each saving off in turn")
    ap.add_argument("--no-vllm", action="store_true", help="skip vLLM even where it imports")
    a = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench_models import smollm2
    from bench_trl import CHAT_QUESTION
    from feedback_rl import SamplingParams, encode_prompt, pad_id, stop_token_ids
    from feedback_rl.loop.rollout import cut_at_stop
    from feedback_rl.rows.synthetic import addition
    from frl_plugins.backends.hf import HFBackend, decode
    path = smollm2()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    questions = [CHAT_QUESTION.format(a=r["prompt"][:2], b=r["prompt"][3:5]) for r in addition("train", a.prompts, 100, 0)]
    distinct = [encode_prompt(tok, [{"role": "user", "content": q}]) for q in questions]
    prompts = [p for p in distinct for _ in range(a.copies)]
    stops = stop_token_ids(tok, model)
    sampling = SamplingParams(max_new_tokens=a.new_tokens, temperature=1.0, stop_token_ids=stops)
    runs = {name: HFBackend(HFBackend.Options(engine=name), None).generate for name in ("loop", "generate")}
    if a.levers:
        for name, off in LEVERS.items():
            runs[name] = lambda m, t, p, s, off=off: decode(m, p, s, stops, pad_id(t), **off)
    print(f"{torch.get_num_threads()} threads; {len(distinct)} prompts of {min(map(len, distinct))}-"
          f"{max(map(len, distinct))} tokens x {a.copies}, {a.new_tokens} new tokens, stops {stops}", flush=True)
    with torch.no_grad():
        for run in runs.values():   # first-call costs (thread pools, lazy imports) outside the timing
            run(model, tok, prompts[:2], SamplingParams(max_new_tokens=2, stop_token_ids=stops))
    if not a.no_vllm and importlib.util.find_spec("vllm") is not None:
        from frl_plugins.backends.vllm import VLLMBackend
        runs["vllm"] = VLLMBackend(VLLMBackend.Options(dtype=a.dtype, max_model_len=256), None).generate
        t0 = time.perf_counter()
        runs["vllm"](model, tok, prompts[:1], sampling)
        print(f"vLLM {a.dtype} engine built and weights pushed in {time.perf_counter() - t0:.1f} s", flush=True)
    rates: dict[str, list[float]] = {k: [] for k in runs}
    walls: dict[str, list[float]] = {k: [] for k in runs}
    width = max(map(len, runs))
    for r in range(a.repeats):
        for name, run in runs.items():
            torch.manual_seed(r)
            t = time.perf_counter()
            with torch.no_grad():
                out = run(model, tok, prompts, sampling)
            dt = time.perf_counter() - t
            lengths = [len(cut_at_stop(g, stops).completion_ids) for g in out]
            n = sum(lengths)
            rates[name].append(n / dt)
            walls[name].append(dt)
            print(f"repeat {r} {name:<{width}}: {n:4d} useful tokens (mean {n / len(out):4.1f}, max {max(lengths)}) "
                  f"in {dt:5.1f} s = {n / dt:6.1f} tok/s", flush=True)
    base = statistics.median(rates["generate"])
    print("median:")
    for name in runs:
        rate = statistics.median(rates[name])
        print(f"  {name:<{width}}: {rate:6.1f} tok/s, {statistics.median(walls[name]):5.1f} s a call, "
              f"{rate / base:.2f}x generate")


if __name__ == "__main__":
    main()
