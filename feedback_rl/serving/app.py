"""An OpenAI-compatible HTTP server: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``, and, for an
engine that takes token ids, vLLM's ``/inference/v1/generate`` (serving/generate_route.py).

The HTTP layer only: what generates is an :class:`~feedback_rl.serving.jobs.Engine` (``frl serve``'s HF
batcher, or the rollout endpoint that serves the live policy to an agent during training, loop/agents.py).
Streaming (server-sent events ending in ``[DONE]``), log-probs, ``echo``, ``n``, stop strings and seeds follow
OpenAI's shapes. Every error answers in OpenAI's error shape; with an API key set, every route needs it.
A request's session is its ``X-Session-ID`` header (the rollout endpoint records by it).
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import socket
import time
import uuid
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from feedback_rl.modeling.chat import render_prompt
from feedback_rl.modeling.tool_offer import offer_schemas
from feedback_rl.serving.generate_route import generate_route
from feedback_rl.serving.jobs import Engine, Job
from feedback_rl.serving.limits import DEFAULT_MAX_BODY_MB, PromptBound, longest_token, read_body
from feedback_rl.serving.protocol import (
    SESSION_HEADER, ApiError, Ask, bad, choice, envelope, parse_ask, parse_messages, parse_prompts, parse_tools, usage,
)
from feedback_rl.serving.tool_replies import tool_reply


def chat_prompt(tokenizer: Any, messages: list[dict], tools: list[dict] | None = None) -> str:
    """The conversation rendered exactly as training renders a prompt (the core's ``render_prompt``: the
    tokenizer's chat template, or the recipe's, saved with the model; the request's ``tools`` offered as training
    offers them); a model with no template at all (a base model training never saw a conversation on) gets
    ``role: content`` lines and ``assistant:``, the tools described in a first system line."""
    if getattr(tokenizer, "chat_template", None):
        return render_prompt(tokenizer, messages, tools=tools)
    messages, _, _ = offer_schemas(tokenizer, messages, tools)
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nassistant:"



def error_response(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


class RequireKey:
    """ASGI middleware: every HTTP request needs ``Authorization: Bearer <key>``, unknown paths included."""

    def __init__(self, app: Any, key: str | None):
        self.app, self.want = app, f"Bearer {key}".encode() if key is not None else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.want is not None:
            got = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(got, self.want):
                e = ApiError(401, "invalid or missing API key (send Authorization: Bearer KEY)",
                             code="invalid_api_key")
                await error_response(e)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_app(engine: Engine, tokenizer: Any, model_name: str | None = "local", api_key: str | None = None,
              max_body_mb: float = DEFAULT_MAX_BODY_MB, limit: int | None = None) -> Starlette:
    """The Starlette app around ``engine``; ``limit`` is the model's context; ``api_key`` set means every
    request needs ``Authorization: Bearer <key>``; a request body over ``max_body_mb`` MiB is a 413.
    ``model_name`` None: any model name is served (the rollout endpoint: an agent written for another model
    runs unchanged), and ``/v1/models`` lists ``policy``.

    Parsing, rendering and tokenizing run in worker threads, so one large request never holds the event
    loop (and every other client) while it is read."""
    batcher = engine
    listed = model_name or "policy"
    vocab = len(tokenizer)
    encode = PromptBound(batcher.text.encode, limit, longest_token(tokenizer))
    max_bytes = int(max_body_mb * 2**20)

    async def read(request: Request) -> dict:
        raw = await read_body(request, max_bytes)
        try:
            body = await asyncio.to_thread(json.loads, raw)
        except ValueError as e:
            raise ApiError(400, f"the body is not valid JSON: {e}", code="invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object", code="invalid_json")
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise bad("model", "required: the model's id (GET /v1/models lists it)")
        if model_name is not None and name != model_name:
            raise ApiError(404, f"the model '{name}' does not exist; this server serves '{model_name}'",
                           param="model", code="model_not_found")
        return body

    def fit(ask: Ask, prompts: list[tuple[str, list[int]]]) -> Ask:
        """Refuse what exceeds the context; chat without ``max_tokens`` may fill the context."""
        longest = max(len(ids) for _, ids in prompts)
        if not all(ids for _, ids in prompts):
            raise bad("prompt", "a prompt is empty (it has no tokens)")
        if ask.max_tokens is None:
            ask.max_tokens = (limit - longest) if limit else 1024
            if ask.max_tokens < 1:
                raise bad("messages", f"the prompt is {longest} tokens, the model's whole context of {limit}")
        elif limit and longest + ask.max_tokens > limit:
            raise bad("max_tokens", f"the prompt is {longest} tokens; with max_tokens {ask.max_tokens} "
                                    f"it exceeds the model's context of {limit}")
        return ask

    async def chat(request: Request) -> Any:
        body = await read(request)
        ask = parse_ask(body, chat=True, tools=batcher.tools)
        turns, tools, session = parse_messages(body), parse_tools(body), request.headers.get(SESSION_HEADER)
        batcher.admit(ask, session)
        prompts = [await asyncio.to_thread(batcher.chat_prompt, turns, tools, session, encode)]
        calling = tools if body.get("tool_choice") != "none" else None   # "none": the calls stay text
        return await answer(await batcher.submit(prompts, fit(ask, prompts), session), True, body["model"], calling)

    async def completions(request: Request) -> Any:
        body = await read(request)
        ask = parse_ask(body, chat=False)
        session = request.headers.get(SESSION_HEADER)
        batcher.admit(ask, session)
        prompts = await asyncio.to_thread(completion_prompts, body, session)
        return await answer(await batcher.submit(prompts, fit(ask, prompts), session), False, body["model"])

    def completion_prompts(body: dict, session: str | None) -> list[tuple[str, list[int]]]:
        prompts = [(p, encode(p, "prompt")) if isinstance(p, str) else (batcher.text.decode(p, False), p)
                   for p in parse_prompts(body, vocab)]
        if batcher.token_in:   # the rollout endpoint: the ids extend the session's sequence (or split it)
            if len(prompts) != 1:
                raise bad("prompt", "one prompt per call: each call extends its session's one sequence")
            prompts = [batcher.token_prompt(ids, session) for _, ids in prompts]
        return prompts

    async def answer(job: Job, is_chat: bool, name: str, tools: list[dict] | None = None) -> Any:
        rid, created = f"frl-{uuid.uuid4().hex[:24]}", int(time.time())
        if job.ask.stream:
            return StreamingResponse(stream(job, is_chat, rid, created, name, tools),
                                     media_type="text/event-stream")
        n = job.choices
        texts, toks, finish, used = [""] * n, [[] for _ in range(n)], [None] * n, 0
        ids: list[list[int] | None] = [None] * n
        calls: list[list[dict] | None] = [None] * n
        try:
            async for piece in job.pieces():
                texts[piece.index] += piece.text
                toks[piece.index] += piece.toks or []
                finish[piece.index] = piece.finish or finish[piece.index]
                ids[piece.index] = piece.token_ids if piece.token_ids is not None else ids[piece.index]
                used += piece.completion_tokens
        except Exception as e:  # noqa: BLE001 - a failed generate is the server's fault: a 500, in shape
            raise ApiError(500, f"generation failed: {type(e).__name__}: {e}", code="generation_failed") from e
        if tools:
            for i in range(n):
                calls[i], finish[i] = tool_reply(texts[i], finish[i], tools, f"call_{rid[4:]}_{i}")
        want = job.ask.top_logprobs is not None
        choices = [choice(is_chat, i, texts[i], toks[i] if want else None, finish[i], delta=False,
                          token_ids=ids[i], tool_calls=calls[i]) for i in range(n)]
        extra = {}
        if any(i is not None for i in ids):   # vLLM's places: the chat response's, each completion choice's
            if is_chat:
                extra["prompt_token_ids"] = job.prompt_ids[0]
            else:
                for i, c in enumerate(choices):
                    c["prompt_token_ids"] = job.prompt_ids[i // job.ask.n]
        return JSONResponse(envelope(is_chat, rid, created, name, choices, chunk=False,
                                     usage=usage(job.prompt_tokens, used), **extra))

    async def stream(job: Job, is_chat: bool, rid: str, created: int, name: str,
                     tools: list[dict] | None = None) -> AsyncIterator[str]:
        extra = {"usage": None} if job.ask.include_usage else {}
        started: set[int] = set()
        texts: dict[int, str] = {}
        used = 0
        try:
            async for piece in job.pieces():
                first = piece.index not in started
                started.add(piece.index)
                used += piece.completion_tokens
                finish, calls = piece.finish, None
                if tools:   # the reply's text is kept for its calls, which go with its last piece
                    texts[piece.index] = texts.get(piece.index, "") + piece.text
                    if finish is not None:
                        calls, finish = tool_reply(texts[piece.index], finish, tools, f"call_{rid[4:]}_{piece.index}")
                c = choice(is_chat, piece.index, piece.text, piece.toks, finish, delta=True, first=first,
                           token_ids=piece.token_ids, tool_calls=calls)
                yield _event(envelope(is_chat, rid, created, name, [c], chunk=True, **extra))
            if job.ask.include_usage:
                yield _event(envelope(is_chat, rid, created, name, [], chunk=True,
                                      usage=usage(job.prompt_tokens, used)))
        except Exception as e:  # noqa: BLE001 - the stream has begun: the error goes in an event
            yield _event(ApiError(500, f"generation failed: {type(e).__name__}: {e}").body())
        finally:
            job.cancel()   # a client that left stops its rows
        yield "data: [DONE]\n\n"

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [_model_card(listed, limit)]})

    async def one_model(request: Request) -> JSONResponse:
        if model_name is not None and request.path_params["name"] != model_name:
            raise ApiError(404, f"the model '{request.path_params['name']}' does not exist; this server serves "
                                f"'{model_name}'", param="model", code="model_not_found")
        return JSONResponse(_model_card(request.path_params["name"] if model_name is None else model_name, limit))

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(batcher.stats)

    async def on_api_error(request: Request, e: Exception) -> JSONResponse:
        return error_response(e)  # type: ignore[arg-type]

    async def on_http_error(request: Request, e: Exception) -> JSONResponse:
        status = getattr(e, "status_code", 404)
        what = "method not allowed" if status == 405 else "no such route"
        return error_response(ApiError(status, f"{what}: {request.method} {request.url.path}"))

    async def on_crash(request: Request, e: Exception) -> JSONResponse:
        return error_response(ApiError(500, f"internal error: {type(e).__name__}: {e}", code="internal_error"))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()

    token_in = [Route("/inference/v1/generate", generate_route(batcher, read), methods=["POST"])] \
        if batcher.token_in else []
    app = Starlette(routes=[
        *token_in,
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{name:path}", one_model, methods=["GET"]),
        Route("/v1/frl/stats", stats, methods=["GET"]),
    ], middleware=[Middleware(RequireKey, key=api_key)], lifespan=lifespan,
        exception_handlers={ApiError: on_api_error, HTTPException: on_http_error, Exception: on_crash})
    app.state.batcher = app.state.engine = batcher
    return app


def _model_card(name: str, limit: int | None) -> dict:
    """OpenAI's model card, with vLLM's ``max_model_len`` (verifiers' renderers read it for their prompt check)."""
    return {"id": name, "object": "model", "created": 0, "owned_by": "feedback_rl",
            **({"max_model_len": limit} if limit else {})}


def _event(data: dict) -> str:
    return f"data: {json.dumps(data)}\n\n"


def listen(host: str, port: int) -> socket.socket:
    """A bound socket (uvicorn listens on it); raises ``OSError`` when the port is taken."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


class ServerThread:
    """Runs an ASGI app with uvicorn in a background thread (tests, benchmarks, ``frl check``).

    ``port=0`` picks a free port; ``url`` is the base URL once started.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0):
        import threading

        import uvicorn
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                    lifespan="on", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.host = host

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)
