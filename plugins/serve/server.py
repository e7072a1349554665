"""``frl serve``'s app: the core's OpenAI-compatible HTTP layer (``feedback_rl.server``) around this plugin's
HF batcher (engine.py), which samples as each request asks and streams per token."""
from __future__ import annotations

from typing import Any

from feedback_rl.models import context_length
from feedback_rl.server import DEFAULT_MAX_BODY_MB, ServerThread, build_app as build_server, chat_prompt, listen

from .engine import Batcher

__all__ = ["build_app", "ServerThread", "chat_prompt", "listen"]


def build_app(model: Any, tokenizer: Any, model_name: str = "local", api_key: str | None = None,
              max_batch: int = 16, batch_wait_ms: float = 5.0, max_body_mb: float = DEFAULT_MAX_BODY_MB) -> Any:
    """The Starlette app serving ``model``; ``api_key`` set means every request needs ``Authorization: Bearer
    <key>``; a request body over ``max_body_mb`` MiB is a 413."""
    limit = context_length(model.config) if getattr(model, "config", None) is not None else None
    return build_server(Batcher(model, tokenizer, max_batch, batch_wait_ms), tokenizer, model_name, api_key,
                        max_body_mb, limit)
