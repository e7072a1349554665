"""Writes recipes/data/arithmetic-prefs.jsonl: conversational preference pairs for recipes/smollm2-dpo.yaml.

Each row is TRL's conversational preference format: ``prompt`` (one user turn: a reasoning-gym
``basic_arithmetic`` sum of two 1-2 digit numbers, with the instruction the GRPO recipe uses), ``chosen``
and ``rejected`` (one assistant turn each). Chosen states the right sum; rejected is one of the mistakes
SmolLM2-135M-Instruct makes on these prompts (measured with benchmarks/pick_smollm2_task.py): a sum off by
a little, the sum restated without an answer, or the wrong number after a long preamble. The rows come
from seed 2, which neither the GRPO recipe's train (seed 0) nor its eval (seed 1) uses.

    .venv/bin/python scripts/make_arithmetic_prefs.py        # needs the reasoning-gym extra
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from frl_plugins.reasoning_gym.data import ReasoningGymData

OUT = Path(__file__).resolve().parent.parent / "recipes" / "data" / "arithmetic-prefs.jsonl"
CONFIG = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2, "operators": ["+"],
          "allow_parentheses": False, "allow_negation": False}
INSTRUCTION = "Give only the final answer."


def rejected(a: int, b: int, right: int, rng: random.Random) -> str:
    wrong = right + rng.choice([-10, -2, -1, 1, 2, 10])
    kind = rng.randrange(3)
    if kind == 0:
        return f"{a} + {b} = {wrong}"
    if kind == 1:
        return f"The final answer to the given arithmetic problem is {wrong}."
    return f"To find the answer, you add {a} and {b}, which equals {wrong}."


def main() -> None:
    rng = random.Random(0)
    rows = ReasoningGymData(ReasoningGymData.Options(reasoning_gym="basic_arithmetic", size=400, seed=2,
                                                     config=CONFIG, instruction=INSTRUCTION, turns=True),
                            Path(".")).rows()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8") as f:
        for row in rows:
            a, b = (int(x) for x in row["metadata"]["expression"].split("+"))
            right = int(row["answer"])
            f.write(json.dumps({"prompt": row["prompt"],
                                "chosen": [{"role": "assistant", "content": f"{a} + {b} = {right}"}],
                                "rejected": [{"role": "assistant", "content": rejected(a, b, right, rng)}]}) + "\n")
    print(f"wrote {len(rows)} pairs to {OUT}")


if __name__ == "__main__":
    main()
