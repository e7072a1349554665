"""Tools: Python functions the model may call, described by JSON schemas, and how they are offered.

A tool is a module-level function with type hints and a Google-style docstring (``Args:``);
``transformers.utils.get_json_schema`` makes its schema. It runs in a subprocess (``sandbox.py``), which imports
it by module and name: a function defined inside another, or in ``__main__``, cannot be a tool.

Offering: where the chat template renders the ``tools`` argument (it has a tools branch: rendering with and
without a probe tool differs), the schemas go through it. A template without one ignores ``tools=`` silently,
so then the tools are described in the system turn in the Hermes format (:data:`HERMES_TOOLS`: schemas in
``<tools>``, calls as ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``), the format
``tool_calls.py`` parses either way.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

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


@dataclass(frozen=True)
class Tool:
    """A function the model may call, with its JSON schema (OpenAI's ``{type: function, function: {...}}``)."""

    function: Callable[..., Any]
    schema: dict[str, Any]

    @property
    def name(self) -> str:
        return self.schema["function"]["name"]

    @property
    def target(self) -> tuple[str, str]:
        """Where the sandbox imports the function from: (module, qualified name)."""
        return self.function.__module__, self.function.__qualname__


def tool(function: Callable[..., Any]) -> Tool:
    """``function`` as a :class:`Tool`; a function with no usable docstring or type hints, or one the sandbox
    cannot import, is a one-line :class:`UserError` naming it."""
    where = f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', function)}"
    if "<locals>" in getattr(function, "__qualname__", "<locals>") or function.__module__ == "__main__":
        raise UserError(f"tool {where}: a tool must be a module-level function of an importable module "
                        "(it runs in a subprocess that imports it)")
    from transformers.utils import get_json_schema
    try:
        schema = get_json_schema(function)
    except Exception as e:  # noqa: BLE001 - transformers' DocstringParsingException and TypeHintParsingException
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"tool {where}: {msg}") from None
    return Tool(function, schema)


def renders_tools(tokenizer: Any) -> bool:
    """Whether the chat template renders the ``tools`` argument (a template without a tools branch ignores it)."""
    conv = [{"role": "user", "content": "?"}]
    try:
        plain = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        offered = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True, tools=[_PROBE_TOOL])
    except Exception:  # noqa: BLE001 - a template that refuses tools= does not render them
        return False
    return offered != plain and "frl_probe_tool" in offered


def hermes_system_prompt(tools: list[Tool]) -> str:
    """The tools described in the Hermes format, for a system turn."""
    return HERMES_TOOLS.format(schemas="\n".join(json.dumps(t.schema) for t in tools))


def offer(tokenizer: Any, messages: list[dict[str, Any]], tools: list[Tool]
          ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None, str]:
    """The opening turns and the ``tools=`` argument to render them with, and how the tools were offered:
    ``template`` (through its tools branch), ``system_prompt`` (Hermes text added to the system turn, or a
    new first system turn) or ``none`` (no tools)."""
    if not tools:
        return list(messages), None, "none"
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise UserError(f"two tools share a name: {', '.join(sorted(n for n in set(names) if names.count(n) > 1))}")
    if renders_tools(tokenizer):
        return list(messages), [t.schema for t in tools], "template"
    text = hermes_system_prompt(tools)
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": messages[0]["content"] + "\n\n" + text}] + list(messages[1:]), None, \
            "system_prompt"
    return [{"role": "system", "content": text}] + list(messages), None, "system_prompt"
