"""A reply's Hermes ``<tool_call>`` blocks as OpenAI ``tool_calls``: the one place both servers (``frl serve``
and the rollout endpoint) turn the text the model wrote into the calls a client reads back.

Only calls that parse (outcome ``ok``, a tool the request offered) become ``tool_calls``; the text stays the
message's content as the model wrote it, so a client that sends the message back extends the conversation
verbatim. A reply with calls that stopped at its stop token finishes with ``tool_calls``."""
from __future__ import annotations

import json
from typing import Any

from feedback_rl.episodes.tool_calls import ToolCall, parse_tool_calls


def reply_tool_calls(text: str, tools: list[dict[str, Any]], prefix: str
                     ) -> tuple[list[ToolCall], list[dict[str, Any]] | None]:
    """Every ``<tool_call>`` block of ``text`` with its outcome, and the OpenAI ``tool_calls`` of those that
    parsed (None when none did), their ids ``{prefix}_{j}``."""
    found = parse_tool_calls(text, {t["function"]["name"] for t in tools})
    calls = [{"id": f"{prefix}_{j}", "type": "function",
              "function": {"name": f.name, "arguments": json.dumps(f.arguments)}}
             for j, f in enumerate(found) if f.ok]
    return found, calls or None


def finish_with(finish: str | None, calls: list[dict[str, Any]] | None) -> str | None:
    """OpenAI's finish reason for a reply that stopped after writing tool calls."""
    return "tool_calls" if calls and finish == "stop" else finish
