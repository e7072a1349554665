"""Public: what an environment plugin needs besides ``feedback_rl.Environment``: its episodes and replies,
tools (schemas, calls parsed from generated text, run in a sandbox), and a message-level driver."""
from feedback_rl.base import EnvironmentOptions, Episode, Reply
from feedback_rl.episodes.play import Transcript, play
from feedback_rl.episodes.sandbox import ToolResult, answer_calls, run_tool, tool_messages
from feedback_rl.episodes.tool_calls import ToolCall, parse_tool_calls
from feedback_rl.episodes.tools import Tool, tool

__all__ = ["EnvironmentOptions", "Episode", "Reply", "Tool", "tool", "ToolCall", "parse_tool_calls", "ToolResult",
           "run_tool", "answer_calls", "tool_messages", "Transcript", "play"]
