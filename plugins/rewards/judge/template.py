"""Judge prompt templates (``{variable}`` from the rollout and the dataset row) and reply parsing.

The variables a template may use (the judge source fills them):

- ``{prompt}``: the prompt as readable text, free of chat-template markup: a plain-string prompt as it is,
  a single user turn as its content, a longer conversation as ``role: content`` lines;
- ``{prompt_turns}``: the prompt's turns as JSON (``[{"role": "user", "content": ...}]``);
- ``{prompt_rendered}``: the exact text the policy was prompted with (chat template included);
- ``{completion}`` (pointwise), ``{completion_a}`` and ``{completion_b}`` (pairwise); an episode's is its
  transcript, one ``[role] content`` block per turn;
- ``{turns}`` (pointwise), ``{turns_a}`` and ``{turns_b}`` (pairwise): the turns after the prompt as JSON with
  their roles (an episode's tool calls, the environment's answers, the model's turns; a single completion is one
  assistant turn); ``{final_answer}`` (pointwise): an episode's last assistant turn, else the completion;
- every text, number or boolean field of the dataset row, e.g. ``{answer}``.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from feedback_rl import UserError

# Only ``{identifier}`` is a variable: JSON in a template (``{"score": 7}``) needs no escaping.
_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NUM = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_JSON_OBJ = re.compile(r"\{[^{}]*\}")


class Template:
    """A prompt template; ``where`` names it in errors (a file path or the recipe key)."""

    def __init__(self, text: str, where: str, system: str | None = None):
        self.text, self.where, self.system = text, where, system
        self.variables = sorted(set(_VAR.findall(text)) | set(_VAR.findall(system or "")))
        self.hash = hashlib.sha256(json.dumps([system, text]).encode()).hexdigest()[:16]

    def render(self, values: dict[str, Any]) -> list[dict[str, str]]:
        """The chat messages; an undefined variable is a one-line :class:`UserError`."""
        def fill(text: str) -> str:
            def sub(m: re.Match) -> str:
                if m[1] not in values:
                    known = ", ".join(sorted(values))
                    raise UserError(f"judge template {self.where}: undefined variable '{{{m[1]}}}' "
                                    f"(available: {known})")
                return str(values[m[1]])
            return _VAR.sub(sub, text)
        messages = [{"role": "system", "content": fill(self.system)}] if self.system else []
        return messages + [{"role": "user", "content": fill(self.text)}]

    def check_rows(self, rows: Any, filled: tuple[str, ...]) -> None:
        """Every variable is a field of every row (or the prompt, or one of ``filled``, which a judgment
        fills in); else one line naming the variable, how many rows lack it and the first one's line."""
        lacking: dict[str, list[int]] = {}
        for row, line in zip(rows, rows.lines):
            values = template_values(row, prompt="", **dict.fromkeys(filled, ""))
            for var in self.variables:
                if var not in values:
                    lacking.setdefault(var, []).append(line)
        for var, lines in lacking.items():
            fields = ", ".join(sorted(template_values(rows[0], prompt="", **dict.fromkeys(filled, ""))))
            raise UserError(f"judge template {self.where}: '{{{var}}}' is no text or number field of "
                            f"{len(lines)} of {len(rows)} rows of {rows.origin} (first: line {lines[0]}); "
                            f"available: {fields}")


def template_values(row: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What a template may name: the row's text and number fields, and the judgment's own (``prompt``,
    ``completion``...)."""
    values = {k: v for k, v in row.items() if isinstance(v, (str, int, float, bool))}
    values.update(extra)
    return values


def parse_score(reply: str, low: float | None = None, high: float | None = None) -> float | None:
    """``{"score": x}`` anywhere in the reply first, else the first number; None if neither, or out of range."""
    value = None
    for blob in _JSON_OBJ.findall(reply):
        try:
            obj = json.loads(blob)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("score"), (int, float)) and not isinstance(obj["score"], bool):
            value = float(obj["score"])
            break
    if value is None:
        m = _NUM.search(reply)
        value = float(m[0]) if m else None
    if value is None or not math.isfinite(value):
        return None
    if (low is not None and value < low) or (high is not None and value > high):
        return None
    return value


_VERDICT = {"a": 0, "b": 1, "tie": None, "c": None}


def parse_verdict(reply: str) -> tuple[bool, int | None]:
    """(parsed, winner): ``{"winner": "A"|"B"|"tie"}``, ``[[A]]``/``[[B]]``/``[[C]]`` (tie), or a reply
    that starts with A, B or tie. Winner 0 is A, 1 is B, None a tie."""
    for blob in _JSON_OBJ.findall(reply):
        try:
            obj = json.loads(blob)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and str(obj.get("winner", "")).strip().lower() in _VERDICT:
            return True, _VERDICT[str(obj["winner"]).strip().lower()]
    if m := re.search(r"\[\[\s*(A|B|C|tie)\s*\]\]", reply, re.IGNORECASE):
        return True, _VERDICT[m[1].lower()]
    if m := re.match(r"\W*(A|B|(?i:tie))\b", reply.strip()):
        return True, _VERDICT[m[1].lower()]
    return False, None
