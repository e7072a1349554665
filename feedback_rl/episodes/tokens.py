"""One episode as one append-only token sequence: what the model sampled is what it is trained on.

The opening turns are rendered through the chat template and tokenized once. Each assistant turn appends the
ids the model sampled, verbatim (mask 1, behaviour log-probs kept). Each environment turn is rendered alone and
appended (mask 0): earlier turns are never rendered again, so a BPE tokenizer cannot change them (rendering the
whole conversation again and tokenizing it gives other ids wherever the model sampled a non-canonical split,
and some templates drop the newline after an end-of-turn token: verl #3720).

"Rendered alone" means: the template renders a fixed two-turn conversation with and without the new turns, and
the difference is the new turns' text (with the next assistant header). The text the template writes after an
assistant's end-of-turn token (ChatML's newline after ``<|im_end|>``) goes before it: the model sampled the stop
token, not what follows it.

A template that cannot be extended turn by turn (the conversation so far, rendered, is not the beginning of the
conversation with the new turns, or the new turns render differently where they really stand) makes the episode
split per turn from there on: each later turn is a sequence of its own, prompted by the whole conversation
rendered again (what the template asks for), and :attr:`EpisodeTokens.bridge_fallback` says so, for the caller's
``env/bridge_fallbacks`` count. Tokens are never silently re-tokenized.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from feedback_rl.errors import UserError
from feedback_rl.modeling import chat

Turn = dict[str, Any]

# the fixed conversation environment turns are rendered after; the sentinel finds where the assistant's text ends
_SENTINEL = "\u2063FRL-ASSISTANT-END\u2063"
_PROBE = [{"role": "user", "content": "?"}, {"role": "assistant", "content": _SENTINEL}]


@dataclass
class Span:
    """Tokens ``[start, end)`` of a segment: the ``prompt``, an ``assistant`` turn or an ``environment`` turn;
    ``turn`` is the episode's assistant turn it is or follows (its step reward is ``rewards[turn]``), -1 before
    the first."""

    start: int
    end: int
    role: str
    turn: int = -1


@dataclass
class Segment:
    """One token sequence to train on: the prompt's ids, then turns. ``mask`` is 1 on sampled tokens;
    ``logprobs`` holds the behaviour log-prob of each sampled token (0.0 where the mask is 0), or is None when a
    turn came without them (a backend that returns none: the optimizer computes them)."""

    ids: list[int]
    mask: list[int]
    logprobs: list[float] | None
    spans: list[Span] = field(default_factory=list)

    @property
    def prompt_length(self) -> int:
        return self.spans[0].end

    def append(self, ids: list[int], role: str, turn: int, logprobs: list[float] | None = None) -> None:
        start = len(self.ids)
        self.ids += ids
        self.mask += [1 if role == "assistant" else 0] * len(ids)
        if self.logprobs is not None:
            self.logprobs = None if role == "assistant" and logprobs is None else \
                self.logprobs + (list(logprobs) if logprobs is not None else [0.0] * len(ids))
        self.spans.append(Span(start, len(self.ids), role, turn))


def render(tokenizer: Any, conversation: list[Turn], generation: bool = False,
           tools: list[dict] | None = None) -> str:
    """The core's rendering (``modeling/chat.py``), with an assistant turn never left open: an episode's
    next assistant turn always starts after its header."""
    return chat.render(tokenizer, conversation, generation, continue_final=False, tools=tools)


encode = chat.ids   # rendered text to ids, no special tokens added (the template wrote its own)


class EpisodeTokens:
    """The tokens of one episode, built turn by turn.

    ``prompt_ids()`` is what to generate the next assistant turn from; :meth:`add_sampled` appends what was
    sampled, :meth:`add_environment` the environment's answer. ``segments`` are what trains: one, unless the
    template forced a split (:attr:`bridge_fallback`). ``rewards[k]`` is the step reward of assistant turn k.
    """

    def __init__(self, tokenizer: Any, messages: list[Turn], tools: list[dict] | None = None,
                 stop_ids: set[int] | None = None, ids: list[int] | None = None):
        """``ids``: the opening's ids as a token-in client rendered them (kept verbatim), instead of ``messages``
        rendered here."""
        self.tokenizer = tokenizer
        self.tools = tools or None
        self.messages: list[Turn] = list(messages)
        self.stop_ids = set(stop_ids or ()) | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
        self.rewards: list[float | None] = []
        self.bridge_fallback = False
        self.segments: list[Segment] = [self._opened(self.messages, ids)]
        probe = render(tokenizer, _PROBE, tools=self.tools)
        if _SENTINEL not in probe:
            raise UserError("the chat template does not render an assistant turn's content as it is: episodes "
                            "need one that does")
        self._probe = probe
        self._closing = probe[probe.rindex(_SENTINEL) + len(_SENTINEL):]  # what follows an assistant's text
        self._last_stop: int | None = None

    def _opened(self, conversation: list[Turn], ids: list[int] | None = None) -> Segment:
        if ids is None:
            ids = encode(self.tokenizer, render(self.tokenizer, conversation, generation=True, tools=self.tools))
        ids = list(ids)
        return Segment(ids, [0] * len(ids), [0.0] * len(ids), [Span(0, len(ids), "prompt", len(self.rewards) - 1)])

    def prompt_ids(self) -> list[int]:
        """The ids the next assistant turn is generated from."""
        return list(self.segments[-1].ids)

    def room(self, context: int) -> int:
        """Tokens the next turn may take in a context of ``context`` tokens; when too few are left for a turn
        the caller ends the episode as truncated (a context overflow is a limit, not an outcome)."""
        return context - len(self.segments[-1].ids)

    def add_sampled(self, ids: list[int], logprobs: Any, reward: float | None = None) -> None:
        """The model's turn: its ids verbatim (cut by the caller at the first stop token), their behaviour
        log-probs (a list or a tensor, one per id; None when the backend gave none), and the step reward the
        environment gave it (or None)."""
        if logprobs is not None:
            logprobs = [float(x) for x in (logprobs.reshape(-1).tolist() if hasattr(logprobs, "tolist") else logprobs)]
            if len(ids) != len(logprobs):
                raise ValueError(f"{len(ids)} sampled ids but {len(logprobs)} log-probs")
        self.segments[-1].append(list(ids), "assistant", len(self.rewards), logprobs)
        body = ids[:-1] if ids and ids[-1] in self.stop_ids else ids
        # decoded for the environment (and the template checks) only: training keeps the ids
        self.messages.append({"role": "assistant", "content": self.tokenizer.decode(body)})
        self.rewards.append(reward)
        self._last_stop = ids[-1] if ids and ids[-1] in self.stop_ids else None

    def set_reward(self, reward: float | None) -> None:
        """The step reward of the last assistant turn (the environment answers after the turn was added)."""
        self.rewards[-1] = reward

    def add_environment(self, messages: list[Turn]) -> bool:
        """The environment's turns, rendered alone and appended (mask 0) with the next assistant header.
        Returns False when the template cannot be extended here: the episode splits, and the next turn is
        prompted by the whole conversation rendered again."""
        if not messages:
            return True
        if self.messages[-1]["role"] != "assistant":
            raise ValueError("environment turns follow an assistant turn")
        before, self.messages = self.messages, self.messages + list(messages)
        text = self._environment_text(messages)
        if not self.bridge_fallback and self._extends(before, text):
            self.segments[-1].append(encode(self.tokenizer, text), "environment", len(self.rewards) - 1)
            return True
        self.bridge_fallback = True
        self.segments.append(self._opened(self.messages))
        return False

    def _environment_text(self, messages: list[Turn]) -> str | None:
        """The new turns' text, rendered after the fixed probe conversation, with what the template writes
        after the assistant's end-of-turn token in front (all of the closing when the turn did not stop).
        None when the template rewrites the probe's turns once new ones follow."""
        after = render(self.tokenizer, _PROBE + list(messages), generation=True, tools=self.tools)
        if not after.startswith(self._probe):
            return None
        return self._unsampled_closing() + after[len(self._probe):]

    def _unsampled_closing(self) -> str:
        """What the template writes after an assistant's text that the model did not sample: the closing less
        the stop token the turn ended with."""
        if self._last_stop is not None:
            stop_text = self.tokenizer.decode([self._last_stop])
            if self._closing.startswith(stop_text):
                return self._closing[len(stop_text):]
        return self._closing

    def _extends(self, before: list[Turn], text: str | None) -> bool:
        """The template renders this conversation turn by turn: the conversation so far, rendered, is the
        beginning of the conversation with the new turns, and those continue exactly as the appended text."""
        if text is None:
            return False
        old = render(self.tokenizer, before, tools=self.tools)
        new = render(self.tokenizer, self.messages, generation=True, tools=self.tools)
        appended = text[len(self._unsampled_closing()):]
        return old.endswith(self._closing) and new.startswith(old) and new[len(old):] == appended

    def add_ids(self, ids: list[int], text: str) -> None:
        """Turns a token-in client rendered itself (its prompt extends the sequence so far verbatim): ``ids``
        appended as they are (mask 0), ``text`` (their decoding) kept in the transcript."""
        self.segments[-1].append(list(ids), "environment", len(self.rewards) - 1)
        self.messages.append({"role": "environment", "content": text})

    def restart(self, messages: list[Turn] | None = None, ids: list[int] | None = None,
                tools: list[dict] | None = None) -> None:
        """A caller that changed the conversation (edited an earlier turn, or sent ids that do not extend the
        sequence): a new segment opened from ``messages`` rendered whole (with ``tools``), or from ``ids``
        verbatim. Counted like a template that cannot be extended (:attr:`bridge_fallback`)."""
        self.bridge_fallback = True
        if messages is not None:
            self.messages, self.tools = list(messages), tools or None
        self.segments.append(self._opened(self.messages, ids))

    @property
    def turns(self) -> int:
        """Assistant turns so far."""
        return len(self.rewards)
