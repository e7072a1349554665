"""What the openenv tier's tests share: a bridge built as a run builds it, and a real OpenEnv server on loopback."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import uvicorn
from openenv.core.env_server.http_server import create_app

from feedback_rl import PluginContext
from frl_plugins.environments.openenv.plugin import OpenEnvBridge
from word_game import WordAction, WordGame, WordObservation

HERE = Path(__file__).resolve().parent


def bridge(tmp_path: Path, **options: Any) -> OpenEnvBridge:
    """The ``openenv`` environment with these options; the recipe's folder is this one (word_game.py)."""
    return OpenEnvBridge(OpenEnvBridge.Options(**options), PluginContext("openenv", tmp_path, recipe_dir=HERE))


@contextmanager
def word_game_server(max_concurrent_envs: int = 8, classes: tuple = (WordGame, WordAction, WordObservation)
                     ) -> Iterator[str]:
    """WordGame (or another environment's classes) behind OpenEnv's own ``create_app``, served by uvicorn on a
    free port of 127.0.0.1: its ws:// url."""
    app = create_app(*classes, max_concurrent_envs=max_concurrent_envs)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the OpenEnv server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
