"""Public: the OpenAI-compatible server's HTTP layer, for a plugin that brings its own generation engine
(``frl serve``): the app, the request and response shapes, and what an engine receives and emits."""
from feedback_rl.serving.app import ServerThread, build_app, chat_prompt, listen
from feedback_rl.serving.jobs import Engine, Job, Piece, Text
from feedback_rl.serving.limits import DEFAULT_MAX_BODY_MB
from feedback_rl.serving.protocol import ApiError, Ask, Tok

__all__ = ["build_app", "ServerThread", "listen", "chat_prompt", "Engine", "Job", "Piece", "Text", "Ask", "Tok",
           "ApiError", "DEFAULT_MAX_BODY_MB"]
