"""Teaching the tiny model one episode that calls the tool_taskset's tool, since it never writes a tool call by
chance: the call of ``add(2, 3)`` (the taskset's first task), then the tool's answer, each reply learned on the exact
prompt ids it will be given (as tests/integration/test_serve_tools.py teaches one call for `frl serve`)."""
from __future__ import annotations

import re
from pathlib import Path

import torch
from tool_taskset import added, question

TAUGHT = (2, 3)   # the arguments the model learns to call add with; the taskset's second task (4 and 5) gets the
                  # same call, so its tool turn is 1005 and its reward 0: the tool reads what was sampled


def call_text(a: int, b: int) -> str:
    """The taught reply: a Hermes tool call (the format the core's endpoint and renderers' qwen3 parser read)."""
    return f'<tool_call>{{"name": "add", "arguments": {{"a": {a}, "b": {b}}}}}</tool_call>'


def answer_text() -> str:
    """The taught reply to the tool's result: the result."""
    return added(*TAUGHT)


def teach(model, tok, pairs: list[tuple[list[int], list[int]]], folder: Path, steps: int = 80) -> Path:
    """Train ``model`` on ``pairs`` of (prompt ids, reply ids), the loss on the replies only, and save it (with
    ``tok``) to ``folder``. At lr 5e-3 a reply is learned to a loss under 0.01 in 80 steps (measured)."""
    torch.manual_seed(0)
    width = max(len(p) + len(r) for p, r in pairs)
    x = torch.full((len(pairs), width), tok.pad_token_id)
    labels, mask = torch.full((len(pairs), width), -100), torch.zeros((len(pairs), width), dtype=torch.long)
    for i, (p, r) in enumerate(pairs):
        x[i, :len(p) + len(r)] = torch.tensor(p + r)
        labels[i, len(p):len(p) + len(r)] = torch.tensor(r)
        mask[i, :len(p) + len(r)] = 1
    opt = torch.optim.AdamW(model.parameters(), 5e-3)
    for _ in range(steps):
        model(x, attention_mask=mask, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def asked(episode: dict) -> tuple[int, int]:
    """The task's two numbers, from an episode's prompt (verifiers' first message, as bridge_run's agent logs it)."""
    role, prompt = episode["messages"][0]
    a, b = map(int, re.fullmatch(question(r"(\d+)", r"(\d+)"), prompt).groups())
    assert role == "user" and prompt == question(a, b)
    return a, b
