"""Tools: Python functions the model may call, described by JSON schemas, and how they are offered.

A tool is a module-level function with type hints and a Google-style docstring (``Args:``);
``transformers.utils.get_json_schema`` makes its schema. It runs in a subprocess (``sandbox.py``), which imports
it by module and name: a function defined inside another, or in ``__main__``, cannot be a tool.

Offering (:func:`offer`) is the core's one path, ``feedback_rl/modeling/tool_offer.py``: the template's tools
branch where it has one, else the Hermes format in the system turn, the format ``tool_calls.py`` parses either
way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from feedback_rl.errors import UserError
from feedback_rl.modeling.tool_offer import offer_schemas


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
    return offer_schemas(tokenizer, messages, [t.schema for t in tools])
