"""What one request may cost the server: a capped body (413), and prompts refused past the model's context
before the whole text is tokenized.

Both exist because one hostile request used to cost the server for everyone: a 10 MB prompt was read whole,
tokenized whole (31 s with the event loop held) and only then compared with a 64-token context.
"""
from __future__ import annotations

from typing import Any, Callable

from starlette.requests import Request

from feedback_rl.serving.protocol import ApiError, bad

DEFAULT_MAX_BODY_MB = 4.0
# Past the cap a body is read on and thrown away, up to this many times the cap, so the client (which sends
# the whole body before reading the answer) gets the 413 instead of a reset connection; past that, the
# connection ends.
_DRAIN_FACTOR = 16


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, or a 413 :class:`ApiError` once it passes ``max_bytes`` (nothing past it is kept)."""
    declared = request.headers.get("content-length", "")
    too_big = declared.isdigit() and int(declared) > max_bytes
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            too_big = True
        if too_big:
            if size > max_bytes * _DRAIN_FACTOR:
                break
            continue
        chunks.append(chunk)
    if too_big:
        raise ApiError(413, f"the request body is {_size(max(size, int(declared or 0)))}, over this server's "
                            f"limit of {_size(max_bytes)} (frl serve --max-body-mb)", code="request_too_large")
    return b"".join(chunks)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def longest_token(tokenizer: Any) -> int:
    """The most characters one token stands for (its stored form: a byte-level BPE token holds one character
    per byte, so at least as many as it decodes to); added tokens (``<|endoftext|>``) count too."""
    vocab = tokenizer.get_vocab()
    return max([len(t) for t in vocab] + [1])


class PromptBound:
    """Tokenizes a prompt, refusing one over the context after tokenizing no more than a slice of it.

    ``limit`` tokens cover at most ``limit * longest`` characters, so a text longer than
    ``(limit + 1) * longest`` characters is over the context: its slice of that length is tokenized (the
    same cost whatever the body's size) and, when the slice alone has more tokens than the context, the
    prompt is refused. A tokenizer whose tokens can stand for more characters (one that drops some) fails
    that test and has its prompt tokenized whole, as before."""

    def __init__(self, encode: Callable[[str], list[int]], limit: int | None, longest: int):
        self.encode, self.limit, self.longest = encode, limit, longest

    def __call__(self, text: str, param: str) -> list[int]:
        cut = (self.limit + 1) * self.longest if self.limit else None
        if cut is not None and len(text) > cut:
            n = len(self.encode(text[:cut]))
            if n > self.limit:
                raise bad(param, f"the prompt is {len(text)} characters and its first {cut} alone are {n} "
                                 f"tokens, more than the model's context of {self.limit}")
        return self.encode(text)
