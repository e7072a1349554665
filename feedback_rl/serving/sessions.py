"""A session's tokens: each call an agent makes under one ``X-Session-ID`` extends ONE append-only token
sequence, exactly as an environment episode does (``episodes/tokens.py: EpisodeTokens``).

A chat call whose messages are the session's previous messages, the reply it was given, and new messages
appends only the new messages, rendered alone (mask 0); the sampled ids of each reply are kept verbatim (mask 1,
behaviour log-probs beside them). A call that edits the history (or changes its tools) opens a new segment from
the whole conversation rendered again, and is counted (``splits``: ``env/bridge_fallbacks``); nothing is
silently re-tokenized. A token-in call (vLLM's generate route) whose ids start with the sequence so far appends
the rest verbatim; other ids open a new segment, counted the same way.

The reply's text is the sampled ids decoded (the stop token left out): what the client sends back as the
assistant's message, so the next call is recognised as an extension.
"""
from __future__ import annotations

import threading
from typing import Any

from feedback_rl.episodes.tokens import EpisodeTokens
from feedback_rl.episodes.tools import Tool, offer


class Session:
    """One agent episode's calls. ``tokens`` is None until the first call; ``seen`` is the conversation as
    the client holds it (its messages and the replies it was given)."""

    def __init__(self, tokenizer: Any, stop_ids: set[int]):
        self.tokenizer, self.stop_ids = tokenizer, set(stop_ids)
        self.tokens: EpisodeTokens | None = None
        self.seen: list[dict] = []
        self.tools: list[dict] = []
        self.offered = "none"
        self.opening = 0        # messages in the first call (the rollout's prompt), after tools were offered
        self.splits = 0         # calls that could not extend the sequence
        self.calls = 0
        self.lock = threading.Lock()   # one call at a time per session

    def chat(self, turns: list[dict], tools: list[dict]) -> list[int]:
        """The prompt ids of a chat call, recorded: the first call opens the sequence, a call that extends the
        conversation appends its new messages, any other call opens a new segment (counted)."""
        self.calls += 1
        if self.tokens is None:
            messages, schemas, self.offered = self._offer(turns, tools)
            self.tokens = EpisodeTokens(self.tokenizer, messages, tools=schemas, stop_ids=self.stop_ids)
            self.opening = len(self.tokens.messages)
        elif self._extends(turns, tools):
            if not self.tokens.add_environment([dict(t) for t in turns[len(self.seen):]]):
                self.splits += 1   # the template cannot be extended turn by turn here
        else:
            messages, schemas, _ = self._offer(turns, tools)
            self.tokens.restart(messages, tools=schemas)
            self.splits += 1
        self.seen, self.tools = [dict(t) for t in turns], list(tools)
        return self.tokens.prompt_ids()

    def token_in(self, ids: list[int]) -> list[int]:
        """The prompt ids of a token-in call, recorded: ids that start with the sequence so far append the rest
        verbatim; others open a new segment (counted)."""
        self.calls += 1
        if self.tokens is None:
            self.tokens = EpisodeTokens(self.tokenizer, [], stop_ids=self.stop_ids, ids=ids)
            self.tokens.messages.append({"role": "prompt", "content": self.tokenizer.decode(ids)})
            self.opening = len(self.tokens.messages)
            return self.tokens.prompt_ids()
        before = self.tokens.prompt_ids()
        if self.tokens.turns and len(ids) > len(before) and ids[: len(before)] == before:
            self.tokens.add_ids(ids[len(before):], self.tokenizer.decode(ids[len(before):]))
        else:
            self.tokens.restart(ids=ids)
            self.tokens.messages.append({"role": "prompt", "content": self.tokenizer.decode(ids)})
            self.splits += 1
        return self.tokens.prompt_ids()

    def sampled(self, ids: list[int], logprobs: Any) -> str:
        """The reply's ids (cut at the stop token) and their behaviour log-probs, appended verbatim; its text."""
        self.tokens.add_sampled(ids, logprobs)
        reply = self.tokens.messages[-1]["content"]
        self.seen.append({"role": "assistant", "content": reply})
        return reply

    def _extends(self, turns: list[dict], tools: list[dict]) -> bool:
        n = len(self.seen)
        return (tools == self.tools and bool(self.seen) and self.seen[-1]["role"] == "assistant"
                and len(turns) > n and [dict(t) for t in turns[:n]] == self.seen)

    def _offer(self, turns: list[dict], tools: list[dict]) -> tuple[list[dict], list[dict] | None, str]:
        """The core's tools path: through the template's tools branch, else the Hermes system prompt."""
        return offer(self.tokenizer, [dict(t) for t in turns], [Tool(None, t) for t in tools])  # type: ignore[arg-type]
