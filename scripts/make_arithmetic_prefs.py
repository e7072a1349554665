"""Writes recipes/data/arithmetic-prefs.jsonl: conversational preference pairs for recipes/smollm2-dpo.yaml.

Each row is TRL's conversational preference format: ``prompt`` (one user turn: a reasoning-gym
``basic_arithmetic`` sum of two one-digit numbers, with the instruction the GRPO recipe uses), ``chosen``
and ``rejected`` (one assistant turn each). Chosen states the right sum at once; rejected is one of the
mistakes SmolLM2-135M-Instruct makes on these prompts (benchmarks/pick_smollm2_task.py shows them): a
wrong sum, or a long preamble that spends the token budget without an answer. Each prompt gets two pairs.
No prompt of the recipe's eval (reasoning-gym seed 1, 100 rows) is in the file, so its eval is held out.

    .venv/bin/python scripts/make_arithmetic_prefs.py        # needs the reasoning-gym extra
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from frl_plugins.reasoning_gym.data import ReasoningGymData

OUT = Path(__file__).resolve().parent.parent / "recipes" / "data" / "arithmetic-prefs.jsonl"
CONFIG = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "operators": ["+"],
          "allow_parentheses": False, "allow_negation": False}
INSTRUCTION = "Give only the final answer."


def rows(seed: int, size: int) -> list[dict]:
    return ReasoningGymData(ReasoningGymData.Options(reasoning_gym="basic_arithmetic", size=size, seed=seed,
                                                     config=CONFIG, instruction=INSTRUCTION, turns=True),
                            Path(".")).rows()


def rejected(a: int, b: int, right: int, kind: int, rng: random.Random) -> str:
    wrong = right + rng.choice([-2, -1, 1, 2])
    return [f"{a} + {b} = {wrong}",
            f"The final answer to the given arithmetic problem is {wrong}.",
            f"To find the answer, we need to add {a} and {b} together. First, we write the numbers",
            "To solve this problem, we need to perform the arithmetic operation of addition on the"][kind]


def main() -> None:
    rng = random.Random(0)
    held_out = {r["question"] for r in rows(seed=1, size=100)}
    seen, out = set(), []
    for row in rows(seed=0, size=400):
        if row["question"] in held_out or row["question"] in seen:
            continue
        seen.add(row["question"])
        a, b = (int(x) for x in row["metadata"]["expression"].split("+"))
        right = int(row["answer"])
        for kind in rng.sample(range(4), 2):
            out.append({"prompt": row["prompt"],
                        "chosen": [{"role": "assistant", "content": f"{a} + {b} = {right}"}],
                        "rejected": [{"role": "assistant", "content": rejected(a, b, right, kind, rng)}]})
    rng.shuffle(out)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in out)
    print(f"wrote {len(out)} pairs ({len(seen)} prompts, none in the eval) to {OUT}")


if __name__ == "__main__":
    main()
