"""One forward+backward of ``sequence_logprobs`` on SmolLM2-135M-Instruct: padded against padding-free.

The batch is shaped like GRPO on chat prompts: 32 sequences, a 55-token prompt each and completions of
3 to 64 tokens drawn with a fixed seed (a third hit the 64 cap, the rest uniform: mean 44), right-padded
to the longest (17% padding). Each variant is one forward+backward of GRPO's call
(``sequence_logprobs(..., with_entropy=True)``, loss over the completion targets), alternated, median of the
repeats; each is warmed up once on 4 sequences first. Variants: ``padded``; ``packed``: packing's layout for
a masked attention (rows of at most ``packing.ROW_LENGTHS`` (2) times the longest sequence, first-fit
decreasing); with ``--lengths 1,4``: that layout at other multiples; with ``--one-row``: the whole batch in
one row (the flash-attn varlen layout; under sdpa its block-diagonal mask is 3,171 tokens square). The
model's attention is ``sdpa`` (the default on CPU); fp32 weights.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_padding_free.py
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def workload(n: int, prompt: int, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    rng = random.Random(seed)
    lengths = [64 if rng.random() < 0.35 else rng.randint(3, 63) for _ in range(n)]
    prompts = [[100 + rng.randrange(40000) for _ in range(prompt)] for _ in range(n)]
    return prompts, [[100 + rng.randrange(40000) for _ in range(k)] for k in lengths]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lengths", default="", help="more row widths to time, in longest sequences, comma-separated")
    ap.add_argument("--one-row", action="store_true", help="also time the whole batch in one row")
    a = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM

    from bench_models import smollm2
    from feedback_rl.modeling import packing
    from feedback_rl.modeling.batching import pack, sequence_logprobs

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(smollm2(), dtype=torch.float32)
    model.train()   # as in the optimizer's loss (SmolLM2 has no dropout)
    prompts, completions = workload(32, 55, seed=0)
    batch = pack(prompts, completions, pad_id=0)
    warm = pack(prompts[:4], completions[:4], pad_id=0)
    real = int(batch.attention_mask.sum())
    print(f"model {type(model).__name__}, attention {packing.attention_implementation(model)}, "
          f"{torch.get_num_threads()} threads; batch {tuple(batch.input_ids.shape)}: {real} real tokens of "
          f"{batch.input_ids.numel()} ({1 - real / batch.input_ids.numel():.0%} padding), completions "
          f"{min(map(len, completions))}-{max(map(len, completions))} (mean {statistics.mean(map(len, completions)):.1f})")

    # name -> row width in longest sequences (None: one row); padded is not packed
    variants: dict[str, int | None] = {"padded": 0, "packed": packing.ROW_LENGTHS}
    for k in filter(None, a.lengths.split(",")):
        variants[f"rows<={k}x"] = int(k)
    if a.one_row:
        variants["one row"] = None
    for name, k in variants.items():
        if name != "padded":
            rows = packing.pack_rows(batch.input_ids, batch.attention_mask,
                                     None if k is None else k * int(batch.attention_mask.sum(-1).max()))
            print(f"  {name}: rows {tuple(rows.input_ids.shape)} = {rows.input_ids.numel()} positions")

    def step(tokens, name: str) -> tuple[float, torch.Tensor]:
        k = variants[name]
        packing.ROW_LENGTHS = k or default_lengths
        packing.one_row = (lambda impl: True) if k is None else one_row  # flash's layout, under sdpa
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        with packing.padding_free(name != "padded"):
            logps, entropy = sequence_logprobs(model, tokens, with_entropy=True)
            mask = tokens.target_mask
            ((logps * mask).sum() / mask.sum() + 0.01 * (entropy * mask).sum() / mask.sum()).backward()
        return time.perf_counter() - start, logps.detach()

    one_row, default_lengths = packing.one_row, packing.ROW_LENGTHS
    print(f"load before: {os.getloadavg()}")
    for name in variants:
        step(warm, name)
    assert all(packing._SUPPORTED.values()) and packing._SUPPORTED, packing._SUPPORTED   # sdpa passed the probe
    times: dict[str, list[float]] = {name: [] for name in variants}
    logps: dict[str, torch.Tensor] = {}
    for r in range(a.repeats):
        for name in variants:
            t, logps[name] = step(batch, name)
            times[name].append(t)
            print(f"  repeat {r + 1} {name}: {t:.2f} s, log-probs within "
                  f"{float((logps[name] - logps['padded']).abs().max()):.1e} of padded", flush=True)
    print(f"load after: {os.getloadavg()}")
    if not a.repeats:
        return
    base = statistics.median(times["padded"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:>10}: median {med:.2f} s  (padded / this = {base / med:.2f}x)  [{', '.join(f'{t:.2f}' for t in ts)}]")


if __name__ == "__main__":
    main()
