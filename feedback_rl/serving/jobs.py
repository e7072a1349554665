"""What the HTTP layer hands an engine and gets back: a :class:`Job` per request, whose :class:`Piece` s of text
arrive on an asyncio queue (streamed or gathered), and the :class:`Engine` interface that fills them.

Two engines exist: ``frl serve``'s (plugins/serve/engine.py: HF ``generate`` streamed per token, sampling as
the request asks) and the rollout endpoint's (loop/agents.py: the stage's backend through the core's one
generation path, sampling as the stage says, every call recorded by session).
"""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any, AsyncIterator, Protocol

from feedback_rl.serving.protocol import Ask, Tok


@dataclass
class Piece:
    """New text of one choice; the last piece of a choice has ``finish`` and its generated-token count, and,
    from an engine that reports them, the choice's token ids (vLLM's ``token_ids``)."""
    index: int
    text: str
    toks: list[Tok] | None
    finish: str | None = None
    completion_tokens: int = 0
    token_ids: list[int] | None = None


class Text:
    """The tokenizer behind one lock: a fast tokenizer is not safe to use from two threads at once."""

    def __init__(self, tokenizer: Any):
        self.tokenizer, self.lock = tokenizer, threading.Lock()

    def encode(self, text: str) -> list[int]:
        with self.lock:
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        with self.lock:
            return self.tokenizer.decode(ids, skip_special_tokens=skip_special)


class Job:
    """One request: ``choices`` answers to ``prompts`` (text, ids), and the queue their pieces arrive on.
    Created on the server's event loop; an engine's thread calls :meth:`emit`."""

    def __init__(self, prompts: list[tuple[str, list[int]]], ask: Ask, choices: int | None = None):
        self.ask, self.loop = ask, asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.prompt_tokens = sum(len(ids) for _, ids in prompts)
        self.prompt_ids = [ids for _, ids in prompts]
        self.choices = choices if choices is not None else len(prompts) * ask.n
        self.cancelled = False

    def emit(self, item: Piece | BaseException) -> None:  # called from the engine's thread
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def cancel(self) -> None:
        self.cancelled = True

    async def pieces(self) -> AsyncIterator[Piece]:
        """Every piece in order; raises what generation raised."""
        left = self.choices
        while left:
            item = await self.queue.get()
            if isinstance(item, BaseException):
                raise item
            left -= item.finish is not None
            yield item


class Engine(Protocol):
    """What the server generates with. ``tools``: it offers ``tools=`` (else they are refused);
    ``token_in``: it serves vLLM's token-in ``/inference/v1/generate`` (serving/generate_route.py)."""

    text: Text
    stats: dict
    tools: bool
    token_in: bool

    def start(self) -> None:
        """Called on the server's event loop as it starts."""

    async def stop(self) -> None:
        """Called on the server's event loop as it stops."""

    def admit(self, ask: Ask, session: str | None) -> None:
        """Refuse (an ``ApiError``) what this engine cannot honour, before the request's prompt is built (the
        rollout endpoint records prompts into the session)."""

    def chat_prompt(self, turns: list[dict], tools: list[dict], session: str | None,
                    encode: Any) -> tuple[str, list[int]]:
        """A chat request's prompt (text, ids), in a worker thread; ``encode(text, param)`` tokenizes within
        the model's context."""

    def token_prompt(self, ids: list[int], session: str | None) -> tuple[str, list[int]]:
        """A token-in request's prompt (``token_in`` engines only)."""

    async def submit(self, prompts: list[tuple[str, list[int]]], ask: Ask, session: str | None = None) -> Job:
        """Queue a request; its pieces arrive on ``job.pieces()``."""
