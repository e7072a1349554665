"""Synthetic datasets the project generates itself, so every recipe runs offline.

A generator returns rows (dicts). ``split`` picks a held-out part that never overlaps the train part.
"""
from __future__ import annotations

import itertools
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


LETTERS = "abcdefgh"


def _sort_prompts(split: str, size: int | None, holdout: int, seed: int) -> list[str]:
    """Every ordering of 3-5 distinct letters from a-h, shuffled; the first ``holdout`` are eval."""
    words = ["".join(p) for n in (3, 4, 5) for p in itertools.permutations(LETTERS, n)]
    random.Random(seed).shuffle(words)
    chosen = words[:holdout] if split == "eval" else words[holdout:]
    return chosen if size is None else chosen[:size]


def _unsorted(word: str, rng: random.Random) -> str:
    """A random permutation of ``word``'s letters that is not in ascending order."""
    target = "".join(sorted(word))
    while True:
        letters = list(word)
        rng.shuffle(letters)
        if "".join(letters) != target:
            return "".join(letters)


def sort(split: str, size: int | None, holdout: int, seed: int) -> list[dict]:
    """Sort letters: ``{"prompt": "sort dbca:", "completion": "abcd", "answer": "abcd", "task": "sort"}``."""
    rows = []
    for word in _sort_prompts(split, size, holdout, seed):
        target = "".join(sorted(word))
        rows.append({"prompt": f"sort {word}:", "completion": target, "answer": target, "task": "sort"})
    return rows


def sort_pairs(split: str, size: int | None, holdout: int, seed: int) -> list[dict]:
    """Preference pairs for ``sort``: chosen is the sorted word, rejected an unsorted permutation."""
    rng = random.Random(seed + 1)
    return [{"prompt": f"sort {word}:", "chosen": "".join(sorted(word)), "rejected": _unsorted(word, rng),
             "task": "sort"}
            for word in _sort_prompts(split, size, holdout, seed)]


def sort_labeled(split: str, size: int | None, holdout: int, seed: int) -> list[dict]:
    """Labeled completions for ``sort`` (KTO): even rows sorted (True), odd rows unsorted (False)."""
    rng = random.Random(seed + 2)
    rows = []
    for i, word in enumerate(_sort_prompts(split, size, holdout, seed)):
        good = i % 2 == 0
        completion = "".join(sorted(word)) if good else _unsorted(word, rng)
        rows.append({"prompt": f"sort {word}:", "completion": completion, "label": good, "task": "sort"})
    return rows


GENERATORS: dict[str, Callable[..., list[dict]]] = {
    "addition": addition,
    "sort": sort,
    "sort_pairs": sort_pairs,
    "sort_labeled": sort_labeled,
}
