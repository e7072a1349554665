"""An OpenAI-compatible HTTP server for a local HF model: ``/v1/chat/completions``, ``/v1/completions``.

Concurrent requests are batched: a queue collects requests for ``batch_wait_ms`` (or until
``max_batch``), then one call of the core generation path (``generate_rollouts``) serves them all.
Requests with different sampling settings go in separate generate calls.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from feedback_rl import SamplingParams
from feedback_rl import generate_rollouts


@dataclass
class _Job:
    prompt: str
    sampling: SamplingParams
    n: int
    future: asyncio.Future = field(default=None)  # type: ignore[assignment]


def chat_prompt(tokenizer: Any, messages: list[dict]) -> str:
    """The tokenizer's chat template when it has one, else ``role: content`` lines and ``assistant:``."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    lines = [f"{m.get('role', 'user')}: {_text(m.get('content', ''))}" for m in messages]
    return "\n".join(lines) + "\nassistant:"


def _text(content: Any) -> str:
    if isinstance(content, list):  # the content-parts form: keep the text parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


class BadRequest(Exception):
    pass


class Batcher:
    """Collects concurrent jobs and runs them through one generate call per sampling setting."""

    def __init__(self, backend: Any, model: Any, tokenizer: Any, max_batch: int = 16, wait_ms: float = 5.0):
        self.backend, self.model, self.tokenizer = backend, model, tokenizer
        self.max_batch, self.wait_s = max_batch, wait_ms / 1000
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.stats = {"requests": 0, "batches": 0, "max_batch": 0, "generated_tokens": 0}
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()

    async def submit(self, prompt: str, sampling: SamplingParams, n: int) -> list:
        job = _Job(prompt, sampling, n, asyncio.get_running_loop().create_future())
        self.stats["requests"] += 1
        await self.queue.put(job)
        return await job.future

    async def _run(self) -> None:
        while True:
            jobs = [await self.queue.get()]
            deadline = time.monotonic() + self.wait_s
            while len(jobs) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            groups: dict[tuple, list[_Job]] = {}
            for job in jobs:
                s = job.sampling
                groups.setdefault((s.max_new_tokens, s.temperature, s.top_p, s.greedy), []).append(job)
            for group in groups.values():
                await self._generate(group)

    async def _generate(self, jobs: list[_Job]) -> None:
        rows = [{"prompt": j.prompt} for j in jobs for _ in range(j.n)]
        self.stats["batches"] += 1
        self.stats["max_batch"] = max(self.stats["max_batch"], len(rows))
        try:
            rollouts = await asyncio.to_thread(generate_rollouts, self.backend, self.model, self.tokenizer,
                                               rows, jobs[0].sampling, 1)
        except Exception as e:  # noqa: BLE001 - every waiting request gets the error
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(e)
            return
        k = 0
        for j in jobs:
            if not j.future.done():
                j.future.set_result(rollouts[k: k + j.n])
            k += j.n
        self.stats["generated_tokens"] += sum(len(r.completion_ids) for r in rollouts)


def _context_limit(model: Any) -> int | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)


def _sampling(body: dict) -> tuple[SamplingParams, int]:
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 16
    temperature = float(body.get("temperature", 1.0) if body.get("temperature") is not None else 1.0)
    top_p = float(body.get("top_p") if body.get("top_p") is not None else 1.0)
    n = int(body.get("n") or 1)
    if not (isinstance(max_tokens, int) and max_tokens >= 1) or n < 1 or not 0 < top_p <= 1 or temperature < 0:
        raise BadRequest("invalid max_tokens, n, top_p or temperature")
    return SamplingParams(max_new_tokens=max_tokens, temperature=temperature or 1.0, top_p=top_p,
                          greedy=temperature == 0), n


def _cut(text: str, stop: Any) -> tuple[str, bool]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    cuts = [text.find(s) for s in stops if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def build_app(model: Any, tokenizer: Any, backend: Any, model_name: str = "local",
              api_key: str | None = None, max_batch: int = 16, batch_wait_ms: float = 5.0) -> Starlette:
    """The Starlette app; ``api_key`` set means every request needs ``Authorization: Bearer <key>``."""
    batcher = Batcher(backend, model, tokenizer, max_batch, batch_wait_ms)
    limit = _context_limit(model)

    def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)

    async def run(request: Request, make_prompts, shape) -> JSONResponse:
        if api_key is not None:
            got = request.headers.get("authorization", "")
            if not hmac.compare_digest(got.encode(), f"Bearer {api_key}".encode()):
                return error(401, "invalid or missing API key", "authentication_error")
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise BadRequest("the body must be a JSON object")
            sampling, n = _sampling(body)
            prompts = make_prompts(body)
            for p in prompts:
                used = len(tokenizer(p, add_special_tokens=False)["input_ids"])
                if limit and used + sampling.max_new_tokens > limit:
                    raise BadRequest(f"the prompt is {used} tokens; with max_tokens {sampling.max_new_tokens} "
                                     f"it exceeds the model's context of {limit}")
        except BadRequest as e:
            return error(400, str(e))
        except ValueError as e:  # malformed JSON
            return error(400, f"invalid JSON body: {e}")
        results = await asyncio.gather(*(batcher.submit(p, sampling, n) for p in prompts))
        choices, used_in, used_out = [], 0, 0
        for p_idx, rollouts in enumerate(results):
            for r in rollouts:
                text, stopped = _cut(r.completion, body.get("stop"))
                finish = "stop" if stopped or not r.truncated else "length"
                choices.append(shape(len(choices), text, finish))
                used_out += len(r.completion_ids)
            used_in += len(rollouts[0].prompt_ids) if rollouts else 0
        kind = "chat.completion" if shape is chat_choice else "text_completion"
        return JSONResponse({
            "id": f"frl-{uuid.uuid4().hex[:12]}", "object": kind, "created": int(time.time()),
            "model": body.get("model") or model_name, "choices": choices,
            "usage": {"prompt_tokens": used_in, "completion_tokens": used_out,
                      "total_tokens": used_in + used_out},
        })

    def chat_prompts(body: dict) -> list[str]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty list")
        return [chat_prompt(tokenizer, messages)]

    def completion_prompts(body: dict) -> list[str]:
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise BadRequest("'prompt' must be a string or a list of strings")
        return prompts

    def chat_choice(i: int, text: str, finish: str) -> dict:
        return {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": finish}

    def text_choice(i: int, text: str, finish: str) -> dict:
        return {"index": i, "text": text, "logprobs": None, "finish_reason": finish}

    async def chat(request: Request) -> JSONResponse:
        return await run(request, chat_prompts, chat_choice)

    async def completions(request: Request) -> JSONResponse:
        return await run(request, completion_prompts, text_choice)

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": model_name, "object": "model",
                                                          "owned_by": "feedback_rl"}]})

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(batcher.stats)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/frl/stats", stats, methods=["GET"]),
    ], lifespan=lifespan)
    app.state.batcher = batcher
    return app


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
