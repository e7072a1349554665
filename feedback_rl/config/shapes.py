"""The feedback shapes, declared: for each, the judgment kinds that can build it, the columns an offline row
needs, and how many token sequences one of its items trains on (for ``frl plan``).

loop/feedback.py builds the shapes; this table is what a recipe (``can_build``), a stage's data (``row_columns``)
and a plan are checked against before any model loads, so it sits below them, beside the recipe schema.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from feedback_rl.rows.dataset import TEXT_OR_TURNS, Turns

TEXT = TEXT_OR_TURNS
"""A column that holds text, or a conversation as a list of ``{role, content}`` turns."""


@dataclass(frozen=True)
class Shape:
    name: str
    columns: dict[str, Any]         # what an offline row needs besides ``prompt``
    built_from: frozenset[str]      # judgment kinds it can be built from
    sequences_per_item: int         # token sequences one item trains on


SHAPES = {s.name: s for s in (
    Shape("scalar", {}, frozenset({"scores", "values"}), 1),
    Shape("pairs", {"chosen": TEXT, "rejected": TEXT}, frozenset({"scores", "preferences", "values"}), 2),
    Shape("binary", {"completion": TEXT, "label": bool}, frozenset({"scores", "preferences", "labels"}), 1),
    Shape("demonstrations", {"completion": TEXT}, frozenset(), 1),
)}

JUDGMENTS = {"scores", "preferences", "values", "labels"}


def row_columns(shape: str, online: bool, first: dict | None = None) -> dict[str, Any]:
    """The columns (and types) every row of a stage's ``data.train`` needs. ``first`` (the first row) picks
    between TRL's forms: SFT on ``messages``, and pairs whose ``chosen``/``rejected`` conversations carry
    their prompt in their shared first turns (no ``prompt`` column)."""
    first = first or {}
    if not online and shape == "demonstrations" and "messages" in first and "completion" not in first:
        return {"messages": Turns}
    if not online and shape == "pairs" and "prompt" not in first and isinstance(first.get("chosen"), list):
        return {"chosen": Turns, "rejected": Turns}
    return {"prompt": TEXT, **({} if online else SHAPES[shape].columns)}


def can_build(shape: str, judgments: set[str]) -> bool:
    """Whether a source returning these judgment kinds can feed an optimizer consuming ``shape``."""
    return bool(SHAPES[shape].built_from & set(judgments))


def buildable(judgments: set[str]) -> set[str]:
    """The shapes these judgment kinds can build."""
    return {name for name, s in SHAPES.items() if s.built_from & set(judgments)}
