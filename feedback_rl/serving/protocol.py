"""The OpenAI wire format: request bodies checked into :class:`Ask`, and the response and chunk shapes.

A request that the server cannot honour is refused with a 400 naming the parameter, never ignored:
``frl serve`` has no tools, no constrained decoding and no logit bias, so those are refused outright (the
rollout endpoint offers ``tools`` through the core's tools path: ``parse_ask(..., tools=True)``).

Token ids ride along in vLLM's extra fields (what vLLM returns for ``return_token_ids: true``):
``prompt_token_ids`` on the response, ``token_ids`` on each choice.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_TOP_LOGPROBS = 20
SESSION_HEADER = "X-Session-ID"   # a request's session; verifiers' SESSION_ID_HEADER (verifiers/v1/clients/client.py)


class ApiError(Exception):
    """An answer in OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = "server_error" if self.status >= 500 else "invalid_request_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def bad(param: str, message: str) -> ApiError:
    return ApiError(400, f"{param}: {message}", param=param, code="invalid_value")


@dataclass
class Ask:
    """One request's settings, checked; ``top_logprobs`` is None when no log-probs are asked for."""
    max_tokens: int | None
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    top_logprobs: int | None = None
    echo: bool = False
    stream: bool = False
    include_usage: bool = False
    return_token_ids: bool = False   # vLLM's: the choices' token ids and the prompt's come back

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


# Parameters with no counterpart here: refused unless sent with their "off" value.
_UNSUPPORTED = {"tools": (None, []), "functions": (None, []), "tool_choice": (None, "none"),
                "function_call": (None, "none"), "logit_bias": (None, {}), "presence_penalty": (None, 0, 0.0),
                "frequency_penalty": (None, 0, 0.0), "suffix": (None, ""), "audio": (None,),
                "prediction": (None,), "modalities": (None, ["text"])}


def _int(body: dict, key: str, default: Any, lo: int, hi: int | None = None) -> Any:
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        raise bad(key, f"expected an integer {'>= ' + str(lo) if hi is None else f'from {lo} to {hi}'}, got {v!r}")
    return v


def _float(body: dict, key: str, default: float, lo: float, hi: float, lo_open: bool = False) -> float:
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v > hi or v < lo or (lo_open and v == lo):
        raise bad(key, f"expected a number {'above' if lo_open else 'from'} {lo:g} {'up ' if lo_open else ''}to "
                       f"{hi:g}, got {v!r}")
    return float(v)


def _bool(body: dict, key: str) -> bool:
    v = body.get(key)
    if v is not None and not isinstance(v, bool):
        raise bad(key, f"expected true or false, got {v!r}")
    return bool(v)


def parse_ask(body: dict, chat: bool, tools: bool = False) -> Ask:
    """The sampling settings of a chat or completions body; raises :class:`ApiError` (400). ``tools``: the
    engine offers tools (``tools`` and ``tool_choice`` "auto" or "none" pass; :func:`parse_tools` reads them)."""
    for key, off in _UNSUPPORTED.items():
        if tools and (key == "tools" or (key == "tool_choice" and body.get(key) == "auto")):
            continue
        if body.get(key, None) not in off:
            raise bad(key, "not supported by frl serve")
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise bad("response_format", "not supported by frl serve (it cannot constrain decoding)")
    echo = False if chat else _bool(body, "echo")
    key = "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _int(body, key, None if chat else 16, 0 if echo else 1)
    n = _int(body, "n", 1, 1, 128)
    best_of = _int(body, "best_of", n, 1, 128)
    if best_of != n:
        raise bad("best_of", "not supported by frl serve (only best_of = n)")
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad("stop", "expected a non-empty string or a list of them")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise bad("seed", f"expected an integer, got {seed!r}")
    if chat:
        want = _bool(body, "logprobs")
        top = _int(body, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS)
        if body.get("top_logprobs") is not None and not want:
            raise bad("top_logprobs", "needs logprobs: true")
        top_logprobs = top if want else None
    else:
        top_logprobs = _int(body, "logprobs", None, 0, MAX_TOP_LOGPROBS)
    stream = _bool(body, "stream")
    options = body.get("stream_options")
    if options is not None and (not stream or not isinstance(options, dict)):
        raise bad("stream_options", "only with stream: true, as an object")
    include_usage = bool(options and _bool(options, "include_usage"))
    return Ask(max_tokens=max_tokens, temperature=_float(body, "temperature", 1.0, 0.0, 2.0),
               top_p=_float(body, "top_p", 1.0, 0.0, 1.0, lo_open=True), n=n, stop=stops, seed=seed,
               top_logprobs=top_logprobs, echo=echo, stream=stream, include_usage=include_usage,
               return_token_ids=_bool(body, "return_token_ids"))


def parse_messages(body: dict) -> list[dict]:
    """``messages`` as ``{"role", "content"}`` turns with string content (text parts joined)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("messages", "expected a non-empty list of messages")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise bad(f"messages[{i}]", "expected an object with a 'role'")
        content = m.get("content")
        if isinstance(content, list):  # the content-parts form: text parts only
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise bad(f"messages[{i}].content", "only text parts are supported by frl serve")
            content = "".join(p["text"] for p in content)
        if content is None and m["role"] == "assistant":
            content = ""
        if not isinstance(content, str):
            raise bad(f"messages[{i}].content", "expected a string or a list of text parts")
        turns.append({"role": m["role"], "content": content})
    return turns


def parse_tools(body: dict) -> list[dict]:
    """``tools`` in OpenAI's shape (``{"type": "function", "function": {"name", ...}}``), checked."""
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise bad("tools", "expected a list of {type: function, function: {name, description, parameters}}")
    for i, t in enumerate(tools):
        if not (isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("function"), dict)
                and isinstance(t["function"].get("name"), str) and t["function"]["name"]):
            raise bad(f"tools[{i}]", "expected {type: function, function: {name, description, parameters}}")
    return tools


def parse_prompts(body: dict, vocab_size: int) -> list[str | list[int]]:
    """``prompt``: a string, a list of strings, a list of token ids, or a list of such lists."""
    p = body.get("prompt")
    if isinstance(p, str) or (isinstance(p, list) and p and all(_is_id(x) for x in p)):
        prompts = [p]
    elif isinstance(p, list) and p and all(isinstance(x, str) or (isinstance(x, list) and x and all(
            _is_id(t) for t in x)) for x in p):
        prompts = p
    else:
        raise bad("prompt", "expected a string, a list of strings, or token ids (a list of integers, or lists)")
    for x in prompts:
        if isinstance(x, list) and any(t >= vocab_size for t in x):
            raise bad("prompt", f"token id out of range (the vocabulary has {vocab_size})")
    return prompts


def _is_id(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


# ---------------------------------------------------------------------------- response shapes
@dataclass
class Tok:
    """A token as a client sees it: its text, log-prob (None for a prompt's first), alternatives, offset."""
    text: str
    logprob: float | None
    top: list[tuple[str, float]] | None
    offset: int


def legacy_logprobs(toks: list[Tok]) -> dict:
    """The completions shape: parallel lists; ``top_logprobs`` holds the alternatives and the chosen token."""
    return {"tokens": [t.text for t in toks], "token_logprobs": [t.logprob for t in toks],
            "top_logprobs": [None if t.top is None else {**dict(t.top), t.text: t.logprob} for t in toks],
            "text_offset": [t.offset for t in toks]}


def chat_logprobs(toks: list[Tok]) -> dict:
    """The chat shape: ``{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}``."""
    def entry(text: str, lp: float) -> dict:
        return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}
    return {"content": [{**entry(t.text, t.logprob), "top_logprobs": [entry(s, lp) for s, lp in t.top or []]}
                        for t in toks]}


def choice(chat: bool, index: int, text: str, toks: list[Tok] | None, finish: str | None, delta: bool,
           first: bool = False, token_ids: list[int] | None = None, tool_calls: list[dict] | None = None) -> dict:
    """One entry of ``choices``: whole (``delta=False``) or a streamed piece; ``token_ids`` (vLLM's field) when
    the engine reports them, ``tool_calls`` on a chat message (or its last streamed piece) when the reply made some
    (``tool_replies.py``)."""
    logprobs = None if toks is None else chat_logprobs(toks) if chat else legacy_logprobs(toks)
    ids = {} if token_ids is None else {"token_ids": token_ids}
    if not chat:
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish, **ids}
    if not delta:
        message = {"role": "assistant", "content": text, **({"tool_calls": tool_calls} if tool_calls else {})}
        return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish, **ids}
    piece = {"role": "assistant", "content": text} if first else {"content": text} if text or not finish else {}
    if tool_calls:   # streamed whole with the reply's last piece, each with its place in the list
        piece["tool_calls"] = [{"index": j, **call} for j, call in enumerate(tool_calls)]
    return {"index": index, "delta": piece, "logprobs": logprobs, "finish_reason": finish, **ids}


def envelope(chat: bool, rid: str, created: int, model: str, choices: list[dict], chunk: bool, **extra: Any) -> dict:
    kind = ("chat.completion.chunk" if chunk else "chat.completion") if chat else "text_completion"
    return {"id": rid, "object": kind, "created": created, "model": model, "choices": choices, **extra}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
