"""The web labeling app (Starlette on uvicorn): one page, a small JSON API, a token per annotator.

Every route, the page and its static files included, answers 401 without a valid token (header
``Authorization: Bearer``, ``?token=`` which also sets an HttpOnly cookie, or that cookie).
Model output is untrusted: the HTML holds no model text at all; the script puts it in the page
with ``textContent`` only, and the Content-Security-Policy forbids inline script as a second wall.
"""
from __future__ import annotations

import errno
import json
import socket
import sys
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from feedback_rl import UserError

from .store import LabelError, LabelStore

STATIC = Path(__file__).parent / "static"
MAX_BODY = 16 * 1024
MAX_ID = 2**63 - 1  # SQLite's largest integer
COOKIE = "frl_token"
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def create_app(db: str | Path) -> Starlette:
    store = LabelStore(db)

    def token_of(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return request.query_params.get("token") or request.cookies.get(COOKIE)

    async def who(request: Request) -> str | None:
        return await run_in_threadpool(store.annotator_for, token_of(request))

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=_HEADERS)

    def unauthorized(request: Request) -> Response:
        if request.url.path.startswith("/api/"):
            return error(401, "a valid annotator token is required (Authorization: Bearer TOKEN)")
        return PlainTextResponse("401: a valid annotator token is required: open /?token=YOUR_TOKEN\n",
                                 status_code=401, headers=_HEADERS)

    async def page(request: Request) -> Response:
        if await who(request) is None:
            return unauthorized(request)
        resp = FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=_HEADERS)
        if request.query_params.get("token"):
            resp.set_cookie(COOKIE, request.query_params["token"], httponly=True, samesite="strict")
        return resp

    async def static(request: Request) -> Response:
        if await who(request) is None:
            return unauthorized(request)
        name = request.path_params["name"]
        kinds = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
        if name not in kinds:
            return PlainTextResponse("404: not found\n", status_code=404, headers=_HEADERS)
        return FileResponse(STATIC / name, media_type=kinds[name], headers=_HEADERS)

    async def next_item(request: Request) -> Response:
        name = await who(request)
        if name is None:
            return unauthorized(request)
        item = await run_in_threadpool(store.next_item, name)
        stats = await run_in_threadpool(store.stats, name)
        return JSONResponse({"item": item, "pending": stats["queue_depth"], "mine": stats["mine"],
                             "annotator": name}, headers=_HEADERS)

    async def stats(request: Request) -> Response:
        name = await who(request)
        if name is None:
            return unauthorized(request)
        s = await run_in_threadpool(store.stats, name)
        return JSONResponse({k: (None if v != v else v) for k, v in s.items()}, headers=_HEADERS)

    async def body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise LabelError(f"body is larger than {MAX_BODY} bytes", 413)
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: arrays nested thousands deep
            raise LabelError("body is not valid JSON") from None
        if not isinstance(data, dict):
            raise LabelError("body must be a JSON object")
        item_id = data.get("item_id")
        # SQLite integers are 64-bit: a larger id could name no item, and binding it would raise
        if not isinstance(item_id, int) or isinstance(item_id, bool) or not 1 <= item_id <= MAX_ID:
            raise LabelError(f"item_id must be an integer from 1 to {MAX_ID}", 422)
        return data

    async def label(request: Request) -> Response:
        name = await who(request)
        if name is None:
            return unauthorized(request)
        try:
            data = await body(request)
            choice = data.get("choice")
            if not isinstance(choice, str):
                raise LabelError("choice must be a string", 422)
            status = await run_in_threadpool(store.submit, data["item_id"], name, choice)
        except LabelError as e:
            return error(e.status, str(e))
        return JSONResponse({"status": status}, status_code=201 if status == "stored" else 200, headers=_HEADERS)

    async def skip(request: Request) -> Response:
        name = await who(request)
        if name is None:
            return unauthorized(request)
        try:
            data = await body(request)
            await run_in_threadpool(store.skip, data["item_id"], name)
        except LabelError as e:
            return error(e.status, str(e))
        return JSONResponse({"status": "skipped"}, headers=_HEADERS)

    async def not_found(request: Request, exc: Exception) -> Response:
        if await who(request) is None:
            return unauthorized(request)
        return error(getattr(exc, "status_code", 404), "not found")

    routes = [Route("/", page), Route("/static/{name}", static), Route("/api/next", next_item),
              Route("/api/stats", stats), Route("/api/label", label, methods=["POST"]),
              Route("/api/skip", skip, methods=["POST"])]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.state.store = store
    return app


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket; port 0 picks a free one (read it back from ``getsockname``)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(db: str | Path, host: str = "127.0.0.1", port: int = 8765, log_level: str = "warning") -> None:
    """Run the app until interrupted; prints ``serving on URL`` once the socket listens."""
    import uvicorn
    try:
        sock = bind(host, port)
    except OSError as e:
        taken = e.errno == errno.EADDRINUSE
        raise UserError(f"--port {port}: {host}:{port} is already in use; pick another --port (0 picks a free one)"
                        if taken else f"--host {host} --port {port}: cannot listen there: {e.strerror or e}") from None
    url = f"http://{host}:{sock.getsockname()[1]}/"
    print(f"serving on {url}", flush=True)
    print("open it with ?token=YOUR_TOKEN (create one with: frl label add-annotator NAME)", file=sys.stderr,
          flush=True)
    config = uvicorn.Config(create_app(db), log_level=log_level, access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def spawn(db: str | Path, host: str = "127.0.0.1", port: int = 0):
    """``frl label serve`` in a child process (tests, benchmarks, demos): returns (process, url)."""
    import subprocess
    proc = subprocess.Popen([sys.executable, "-m", "feedback_rl.commands.cli", "label", "serve", "--db", str(db),
                             "--host", host, "--port", str(port)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # "serving on URL", printed once the socket listens ("" if it died)
    if not line.startswith("serving on "):
        proc.kill()
        raise RuntimeError(f"the label server did not start: {line!r}")
    return proc, line.split()[-1].rstrip("/")
