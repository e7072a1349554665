"""Synthetic datasets the project generates itself, so every recipe runs offline.

A generator returns rows (dicts). ``split`` picks a held-out part that never overlaps the train part.
"""
from __future__ import annotations

import random
from typing import Callable


def addition(split: str, size: int | None, holdout: int, seed: int) -> list[dict]:
    """Two-digit addition: ``{"prompt": "23+45=", "completion": "68", "answer": "68", "task": "math"}``."""
    pairs = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    random.Random(seed).shuffle(pairs)
    chosen = pairs[:holdout] if split == "eval" else pairs[holdout:]
    if size is not None:
        chosen = chosen[:size]
    return [{"prompt": f"{a}+{b}=", "completion": str(a + b), "answer": str(a + b), "task": "math"}
            for a, b in chosen]


GENERATORS: dict[str, Callable[..., list[dict]]] = {
    "addition": addition,
}
