"""Tool calls run in a subprocess: a time limit, a memory limit, no network. What went wrong is the tool's
result, which the model reads back; a tool call never raises into the trainer.

- time: the call is killed after ``seconds`` of wall time (and ``RLIMIT_CPU`` caps its CPU time);
- memory: ``RLIMIT_AS`` (``resource.setrlimit``, set by the subprocess itself before it imports the tool: no
  ``preexec_fn``, which is unsafe when episodes run in threads) caps the address space at ``memory_mb``; an
  allocation past it fails inside the tool, as a ``MemoryError``;
- network: the subprocess runs in a network namespace of its own (``unshare --net --map-root-user``: no
  interface but a loopback that is down) where the system allows unprivileged user namespaces; everywhere, a
  socket guard also replaces ``socket.socket`` in the subprocess, so a tool that opens a socket gets an
  ``OSError``. :func:`network_isolation` says which is in force.

The subprocess also starts in an empty temporary folder (what a tool writes is thrown away) with an environment
of ``PATH`` and ``LANG`` only (no API keys reach code the model wrote), and a result longer than ``max_chars`` is
cut (it goes into the model's context).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from feedback_rl.episodes.tool_calls import ToolCall
from feedback_rl.episodes.tools import Tool

# The subprocess: guard sockets, import the tool, call it with the arguments; its prints are captured so that
# stdout carries only the one JSON answer.
_RUNNER = r"""
import io, json, resource, socket, sys
req = json.loads(sys.stdin.read())
resource.setrlimit(resource.RLIMIT_AS, (req["memory"], req["memory"]))
resource.setrlimit(resource.RLIMIT_CPU, (req["cpu"], req["cpu"]))
class _NoNetwork(socket.socket):
    def __init__(self, *a, **k):
        raise OSError("network access is disabled in tool calls")
socket.socket = _NoNetwork
def _refuse(*a, **k):
    raise OSError("network access is disabled in tool calls")
socket.create_connection = socket.getaddrinfo = _refuse
sys.path[:0] = req["path"]
out = sys.stdout
sys.stdout = io.StringIO()
try:
    import importlib
    fn = importlib.import_module(req["module"])
    for part in req["qualname"].split("."):
        fn = getattr(fn, part)
    value = fn(**req["arguments"])
    answer = {"ok": True, "result": value if isinstance(value, str) else json.dumps(value, default=str)}
except BaseException as e:
    answer = {"ok": False, "error": f"{type(e).__name__}: {e}".rstrip(": ")}
out.write(json.dumps(answer))
out.flush()
"""


@dataclass
class ToolResult:
    """A call's answer: ``content`` is what the model reads (the result, or ``error: ...``)."""

    ok: bool
    content: str
    outcome: str  # ok, error (the tool raised), timeout, killed, or the parse outcome of a call that did not run


@lru_cache(maxsize=1)
def network_isolation() -> str:
    """``namespace`` when subprocesses can get a network namespace of their own here, else ``socket guard``."""
    unshare = shutil.which("unshare")
    if unshare:
        try:
            if subprocess.run([unshare, "--net", "--map-root-user", "true"], capture_output=True,
                              timeout=10).returncode == 0:
                return "namespace"
        except (OSError, subprocess.SubprocessError):
            pass
    return "socket guard"


def run_tool(tool: Tool, arguments: dict[str, Any], seconds: float = 10.0, memory_mb: int = 1024,
             max_chars: int = 4000) -> ToolResult:
    """Call ``tool`` with ``arguments`` in a subprocess under the limits."""
    module, qualname = tool.target
    command = [sys.executable, "-c", _RUNNER]
    if network_isolation() == "namespace":
        command = [shutil.which("unshare") or "unshare", "--net", "--map-root-user"] + command
    request = json.dumps({"path": sys.path, "module": module, "qualname": qualname, "arguments": arguments,
                          "memory": memory_mb * 1024 * 1024, "cpu": int(seconds) + 1})
    env = {k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ}
    with tempfile.TemporaryDirectory(prefix="frl-tool-") as cwd:
        try:
            done = subprocess.run(command, input=request, capture_output=True, text=True, timeout=seconds,
                                  cwd=cwd, env=env)
        except subprocess.TimeoutExpired:
            return ToolResult(False, f"error: the tool '{tool.name}' ran past its time limit of {seconds:g} s",
                              "timeout")
    try:
        answer = json.loads(done.stdout)
    except json.JSONDecodeError:
        why = f"signal {-done.returncode}" if done.returncode < 0 else f"exit code {done.returncode}"
        last = (done.stderr.strip().splitlines() or [""])[-1]
        return ToolResult(False, f"error: the tool '{tool.name}' was killed ({why}){': ' + last if last else ''}",
                          "killed")
    if answer["ok"]:
        return ToolResult(True, _cut(answer["result"], max_chars), "ok")
    return ToolResult(False, _cut(f"error: {answer['error']}", max_chars), "error")


def _cut(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[:max_chars] + f"... ({len(text) - max_chars} more characters cut)"


def answer_calls(calls: list[ToolCall], tools: list[Tool], seconds: float = 10.0, memory_mb: int = 1024
                 ) -> list[tuple[ToolCall, ToolResult]]:
    """Each call of a turn answered: a parsed call run, one that did not parse answered with its problem."""
    by_name = {t.name: t for t in tools}
    out = []
    for call in calls:
        if call.ok:
            out.append((call, run_tool(by_name[call.name], call.arguments, seconds, memory_mb)))
        else:
            out.append((call, ToolResult(False, f"error: {call.problem}", call.outcome)))
    return out


def tool_messages(answers: list[tuple[ToolCall, ToolResult]]) -> list[dict[str, Any]]:
    """The answers as ``tool`` turns for the model, one per call."""
    return [{"role": "tool", "name": call.name or "", "content": result.content} for call, result in answers]
