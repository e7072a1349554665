"""Generation tokens/s of the backends on SmolLM2-135M-Instruct: HF ``generate`` against vLLM, side by side.

Both go through the backend plugins the trainer uses (token ids in, ``Generation`` out), on the same
32 prompts of 51 tokens, 64 new tokens each (``min_tokens`` is not set: a completion that stops early
counts the tokens it has), alternated, 3 repeats; vLLM's first call (engine build and the weight push)
is timed apart. Needs vLLM, so run it in .venv-vllm (``bash scripts/setup-vllm.sh``):

    OMP_NUM_THREADS=2 .venv-vllm/bin/python benchmarks/bench_generate.py --dtype float32
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="vLLM's dtype")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    a = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench_models import smollm2
    from feedback_rl.base import SamplingParams
    from frl_plugins.backends.hf import HFBackend
    from frl_plugins.backends.vllm import VLLMBackend
    path = smollm2()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    prompts = [[1] + [100 + (7 * i + j) % 900 for j in range(50)] for i in range(a.prompts)]
    sampling = SamplingParams(max_new_tokens=a.new_tokens, temperature=1.0)
    backends = {"hf": HFBackend(HFBackend.Options(), None),
                "vllm": VLLMBackend(VLLMBackend.Options(dtype=a.dtype, max_model_len=256), None)}
    t0 = time.perf_counter()
    backends["vllm"].generate(model, tok, prompts[:1], sampling)
    print(f"{torch.get_num_threads()} threads; vLLM {a.dtype} engine built and weights pushed in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    rates: dict[str, list[float]] = {k: [] for k in backends}
    for r in range(a.repeats):
        for name, backend in backends.items():
            t = time.perf_counter()
            with torch.no_grad():
                out = backend.generate(model, tok, prompts, sampling)
            dt = time.perf_counter() - t
            n = sum(len(g.completion_ids) for g in out)
            rates[name].append(n / dt)
            print(f"repeat {r} {name:<4}: {n} tokens in {dt:5.1f} s = {n / dt:6.1f} tok/s", flush=True)
    hf, vl = statistics.median(rates["hf"]), statistics.median(rates["vllm"])
    print(f"median: hf {hf:.1f} tok/s, vllm {vl:.1f} tok/s ({vl / hf:.2f}x)")


if __name__ == "__main__":
    main()
