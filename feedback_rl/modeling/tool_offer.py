"""How tools are offered to a chat template: one path for episodes, agent calls and dataset rows.

A template with a tools branch gets the JSON schemas through ``apply_chat_template(tools=...)`` (detected by
rendering with and without a probe tool). A template without one ignores ``tools=`` silently, so then the tools
are described in the system turn in the Hermes format (:data:`HERMES_TOOLS`: schemas in ``<tools>``, calls as
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``). Tools are never dropped.

A dataset row may carry them as TRL's ``tools`` column (a list of OpenAI function schemas, or that list as a
JSON string, as some hub datasets store it): :func:`row_tools` reads it.
"""
from __future__ import annotations

import json
import weakref
from typing import Any

from feedback_rl.errors import UserError

HERMES_TOOLS = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{schemas}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within <tool_call></tool_call> "
    "XML tags:\n<tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n</tool_call>"
)

_PROBE_TOOL = {"type": "function", "function": {
    "name": "frl_probe_tool", "description": "Probe.",
    "parameters": {"type": "object", "properties": {"x": {"type": "string", "description": "x"}}, "required": ["x"]}}}


# tokenizer -> (its chat template, whether it renders tools): the probe is two renders, and offering runs for
# every episode, every row with a tools column and every chat call; a template set anew is probed anew
_PROBED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def renders_tools(tokenizer: Any) -> bool:
    """Whether the chat template renders the ``tools`` argument (a template without a tools branch ignores it)."""
    template = getattr(tokenizer, "chat_template", None)
    try:
        known = _PROBED.get(tokenizer)
    except TypeError:   # a tokenizer that cannot be weakly referenced is probed every time
        known = None
    if known is not None and known[0] == template:
        return known[1]
    conv = [{"role": "user", "content": "?"}]
    try:
        plain = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        offered = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True, tools=[_PROBE_TOOL])
        renders = offered != plain and "frl_probe_tool" in offered
    except Exception:  # noqa: BLE001 - a template that refuses tools= does not render them
        renders = False
    try:
        _PROBED[tokenizer] = (template, renders)
    except TypeError:
        pass
    return renders


def hermes_system_prompt(schemas: list[dict[str, Any]]) -> str:
    """The tools (their JSON schemas) described in the Hermes format, for a system turn."""
    return HERMES_TOOLS.format(schemas="\n".join(json.dumps(s) for s in schemas))


def offer_schemas(tokenizer: Any, messages: list[dict[str, Any]], schemas: list[dict[str, Any]] | None
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None, str]:
    """The turns and the ``tools=`` argument to render them with, and how the tools were offered: ``template``
    (through its tools branch), ``system_prompt`` (Hermes text added to the system turn, or a new first system
    turn) or ``none`` (no tools)."""
    if not schemas:
        return list(messages), None, "none"
    if renders_tools(tokenizer):
        return list(messages), list(schemas), "template"
    text = hermes_system_prompt(schemas)
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": messages[0]["content"] + "\n\n" + text}] + list(messages[1:]), None, \
            "system_prompt"
    return [{"role": "system", "content": text}] + list(messages), None, "system_prompt"


def row_tools(value: Any) -> list[dict[str, Any]] | None:
    """A row's ``tools`` column as a list of function schemas (None or [] for none); anything else is a
    :class:`UserError` saying what the column must hold."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError as e:
            raise UserError(f"field 'tools' is a string but not JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(value, list):
        raise UserError(f"field 'tools' must be a list of function schemas, got {type(value).__name__}")
    for k, s in enumerate(value):
        if isinstance(s, dict) and "function" not in s and "name" in s:
            value[k] = s = {"type": "function", "function": s}   # the bare {name, description, parameters} form
        if not (isinstance(s, dict) and isinstance(s.get("function"), dict) and s["function"].get("name")):
            raise UserError(f"field 'tools' item {k}: expected a function schema "
                            "{type: function, function: {name, description, parameters}}")
    return value
