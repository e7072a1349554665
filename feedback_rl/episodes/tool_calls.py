"""Tool calls in generated text, in the Hermes format: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.

Each call found has an outcome, logged and answered: ``ok``, ``invalid_json`` (the body is not a JSON object
with a string ``name`` and an object ``arguments``), ``unclosed`` (no ``</tool_call>`` before the text ends:
the turn was cut, or the model forgot) or ``unknown_tool`` (a name no offered tool has).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

OPEN, CLOSE = "<tool_call>", "</tool_call>"
OUTCOMES = ("ok", "invalid_json", "unclosed", "unknown_tool")


@dataclass
class ToolCall:
    """One call found in a turn: its outcome, the tool's name and arguments when they parsed, and the raw body."""

    outcome: str
    raw: str
    name: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    problem: str = ""  # why the outcome is not ok, in words the model reads back

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def parse_tool_calls(text: str, tool_names: set[str] | list[str]) -> list[ToolCall]:
    """Every ``<tool_call>`` block of ``text``, in order; none when the turn calls no tool."""
    calls, at = [], 0
    while (start := text.find(OPEN, at)) != -1:
        body_start = start + len(OPEN)
        end = text.find(CLOSE, body_start)
        if end == -1:
            body = text[body_start:].strip()
            calls.append(ToolCall("unclosed", body, problem=f"{OPEN} was not closed with {CLOSE}"))
            break
        calls.append(_parse(text[body_start:end].strip(), set(tool_names)))
        at = end + len(CLOSE)
    return calls


def _parse(body: str, names: set[str]) -> ToolCall:
    try:
        value = json.loads(body)
    except json.JSONDecodeError as e:
        return ToolCall("invalid_json", body, problem=f"the tool call is not valid JSON ({e.msg} at character {e.pos})")
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return ToolCall("invalid_json", body, problem='the tool call must be a JSON object {"name": ..., '
                                                      '"arguments": {...}}')
    args = value.get("arguments", {})
    if isinstance(args, str):  # some models write the arguments as a JSON string, as OpenAI's API does
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            pass
    if not isinstance(args, dict):
        return ToolCall("invalid_json", body, value["name"],
                        problem="the tool call's arguments must be a JSON object")
    if value["name"] not in names:
        known = ", ".join(sorted(names)) or "none"
        return ToolCall("unknown_tool", body, value["name"], args,
                        problem=f"there is no tool named '{value['name']}' (tools: {known})")
    return ToolCall("ok", body, value["name"], args)
