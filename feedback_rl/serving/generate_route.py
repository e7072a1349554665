"""vLLM's token-in route, ``POST /inference/v1/generate``, exactly as verifiers 0.4's training client uses it.

What the client sends and reads (verifiers 0.4.0 ``verifiers/v1/clients/train.py: TrainClient.get_response``
renders the chat with its own renderer and calls ``renderers.client.generate``, renderers 0.1.12
``renderers/client.py``):

- ``POST {base without /v1}/inference/v1/generate``, header ``X-Session-ID: <session>`` (``SESSION_ID_HEADER``,
  verifiers/v1/clients/client.py), body ``{"model", "token_ids": [prompt ids], "sampling_params": {...}}``;
  ``sampling_params`` holds the harness's sampling (``max_tokens``, ``temperature``, ...) plus
  ``stop_token_ids`` (the renderer's), ``logprobs: 1`` and ``skip_special_tokens: false``; optional
  ``cache_salt``, ``priority`` (ignored here), ``content_parts``/``features`` (multimodal: refused).
- The answer it reads: ``choices[0].token_ids`` (the completion's ids), ``choices[0].logprobs.content`` with one
  entry per completion id, each ``{"token": "token_id:<id>", "logprob": <float>}`` (checked entry by entry;
  vLLM's sentinel -9999.0 is refused), ``choices[0].finish_reason`` ("stop" or "length"),
  ``prompt_token_ids`` (top level), ``request_id`` and ``usage``.
- A turn's ``token_ids`` extend the previous turn's prompt + completion ids verbatim when its renderer can
  bridge (``renderer.bridge_to_next_turn``); here the session checks that prefix and appends only the new ids
  (mask 0), else starts a new segment, counted as a bridge fallback (loop/agents.py).
- Before the first call ``GET /v1/models`` is read for ``max_model_len`` (vLLM's model card field), the prompt
  length check.

Checked once by hand (not in the test suite: renderers needs httpx, openai-harmony and prime-pydantic-config,
which this project does not install): renderers 0.1.12's own ``generate()``, in a virtualenv of its own, against
this route serving the tiny model, two turns, the second extending the first's ids: both answers parsed (its
``token_id:`` and finite log-prob checks included), and the session held one segment whose trained ids and
log-probs were the two completions'. tests/integration/test_agent_endpoint.py checks the same fields on every run.

Sampling on the rollout endpoint is the stage's (so behaviour log-probs are what training expects);
``max_tokens`` is honoured up to the stage's ``max_new_tokens``; stop ids are the model's own.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse

from feedback_rl.serving.protocol import SESSION_HEADER, ApiError, Ask, bad, usage


def generate_route(engine: Any, read: Callable[[Request], Awaitable[dict]]) -> Callable[[Request], Awaitable[Any]]:
    """The route's handler for ``engine`` (a ``token_in`` engine); ``read`` checks and parses a body."""

    async def generate(request: Request) -> JSONResponse:
        body = await read(request)
        ids = body.get("token_ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(t, int) and not isinstance(t, bool)
                                                            and 0 <= t < len(engine.text.tokenizer) for t in ids):
            raise bad("token_ids", "expected a non-empty list of token ids in the vocabulary")
        for key in ("content_parts", "features"):
            if body.get(key) is not None:
                raise bad(key, "multimodal prompts are not supported")
        sp = body.get("sampling_params") or {}
        if not isinstance(sp, dict):
            raise bad("sampling_params", "expected an object")
        max_tokens = sp.get("max_tokens")
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                       or max_tokens < 1):
            raise bad("sampling_params.max_tokens", f"expected an integer >= 1, got {max_tokens!r}")
        session, ask = request.headers.get(SESSION_HEADER), Ask(max_tokens=max_tokens, top_logprobs=0)
        engine.admit(ask, session)
        prompt = await asyncio.to_thread(engine.token_prompt, ids, session)
        job = await engine.submit([prompt], ask, session)
        ids_out: list[int] = []
        logprobs: list[float] = []
        finish, used = None, 0
        try:
            async for piece in job.pieces():
                ids_out += piece.token_ids or []
                logprobs += [t.logprob for t in piece.toks or []]
                finish = piece.finish or finish
                used += piece.completion_tokens
        except ApiError:
            raise
        except Exception as e:  # noqa: BLE001 - a failed generate is the server's fault: a 500, in shape
            raise ApiError(500, f"generation failed: {type(e).__name__}: {e}", code="generation_failed") from e
        content = [{"token": f"token_id:{t}", "logprob": lp, "bytes": None, "top_logprobs": []}
                   for t, lp in zip(ids_out, logprobs)]
        return JSONResponse({
            "request_id": f"frl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "token_ids": ids_out, "logprobs": {"content": content},
                         "finish_reason": finish}],
            "prompt_token_ids": prompt[1], "usage": usage(len(prompt[1]), used)})

    return generate
