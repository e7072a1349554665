"""A reply's Hermes ``<tool_call>`` blocks as OpenAI ``tool_calls``: the one place both servers (``frl serve``
and the rollout endpoint) turn the text the model wrote into the calls a client reads back.

Only calls that parse (outcome ``ok``, a tool the request offered) become ``tool_calls``; the text stays the
message's content as the model wrote it, so a client that sends the message back extends the conversation
verbatim. A reply with calls that stopped at its stop token finishes with ``tool_calls``."""
from __future__ import annotations

import json
from typing import Any

from feedback_rl.episodes.tool_calls import ToolCall, parse_tool_calls


def offered_calls(text: str, tools: list[dict[str, Any]]) -> list[ToolCall]:
    """Every ``<tool_call>`` block of ``text`` with its outcome against the offered ``tools``."""
    return parse_tool_calls(text, {t["function"]["name"] for t in tools})


def tool_reply(text: str, finish: str | None, tools: list[dict[str, Any]], prefix: str
               ) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The OpenAI ``tool_calls`` of a whole reply (those that parsed; None when none did, ids ``{prefix}_{j}``)
    and its finish reason: ``tool_calls`` for a reply that stopped after writing them."""
    calls = [{"id": f"{prefix}_{j}", "type": "function",
              "function": {"name": f.name, "arguments": json.dumps(f.arguments)}}
             for j, f in enumerate(offered_calls(text, tools)) if f.ok] or None
    return calls, "tool_calls" if calls and finish == "stop" else finish
