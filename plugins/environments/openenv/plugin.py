"""The ``openenv`` environment: an OpenEnv environment (PyPI ``openenv``) played as episodes, unchanged.

    environment: {type: openenv, env: "my_game:GameEnvironment", kwargs: {size: 5}, max_turns: 8}
    environment: {type: openenv, url: "ws://127.0.0.1:8000", max_turns: 8}

``env`` names an OpenEnv ``Environment`` class (or a function that returns one), built with ``kwargs`` for each
episode in this process; ``url`` names an OpenEnv server (``create_app``), where each episode is one session of
OpenEnv's WebSocket client (its HTTP /reset and /step would build a fresh environment per call). Either way one
OpenEnv instance is one episode: ``reset(seed, episode_id, **row columns)`` opens it, each assistant turn becomes
an Action and steps it, and each Observation becomes this step's messages with its own reward (kept per step,
never summed here), ``done`` ending the episode and ``metadata`` logged beside the turn. An exception is the
episode's error.

Text becomes an Action by filling the action's one str field (``action_field`` picks one of several), or by a
function ``action: "module:name"`` called as ``fn(text)`` that returns the Action or a dict of its fields. An
Observation becomes a message (role ``role``) of its non-empty str fields (``name: value`` lines when there are
several), or whatever ``observation: "module:name"`` returns for ``fn(fields)``: a str, a list of messages, or
None for nothing. Both functions get the observation's fields as a dict, as OpenEnv's server sends them, so a
recipe moves between ``env`` and ``url`` unchanged. The recipe's folder is on sys.path for all three names.

OpenEnv is an optional extra (``bash scripts/setup-openenv.sh``, or ``pip install 'feedback_rl[openenv]'``): it
is imported when the environment is built, and a recipe that uses it without it installed fails validation.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
from typing import Any, Literal

from pydantic import Field, model_validator

from feedback_rl import Environment, PluginContext, UserError, hookimpl
from feedback_rl.environments import EnvironmentOptions, Episode, Reply

from . import sessions

INSTALL = ("needs OpenEnv: run `bash scripts/setup-openenv.sh` (it makes .venv-openenv) or "
           "`pip install 'feedback_rl[openenv]'`")
NAME = r"^[\w.]+:[\w.]+$"


class OpenEnvOptions(EnvironmentOptions):
    env: str | None = Field(None, pattern=NAME, description="module:name of an OpenEnv Environment class (or a "
                            "function returning one), played in this process: one instance per episode")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="env: its constructor's keyword arguments")
    url: str | None = Field(None, pattern=r"^(wss?|https?)://", description="an OpenEnv server (ws:// or http://): "
                            "one WebSocket session (OpenEnv's client) per episode")
    timeout: float = Field(60.0, gt=0, description="url: seconds the server may take to answer one message")
    action: str | None = Field(None, pattern=NAME, description="module:name of fn(text) -> the Action (or a dict "
                               "of its fields); default: the text in the action's str field")
    action_field: str | None = Field(None, description="the action's field the text goes into, where it has "
                                     "several str fields")
    observation: str | None = Field(None, pattern=NAME, description="module:name of fn(fields) -> str, messages "
                                    "or None; default: the observation's non-empty str fields")
    role: Literal["user", "tool", "system"] = Field("user", description="the role of an observation's message")
    show_prompt: bool = Field(True, description="the row's prompt goes before the first observation")
    reset_columns: list[str] = Field(default_factory=list, description="row columns passed to reset() as "
                                     "keyword arguments (e.g. a task's split and index)")

    @model_validator(mode="after")
    def _one_environment(self) -> OpenEnvOptions:
        if (self.env is None) == (self.url is None):
            raise ValueError("give either env (an Environment class, in this process) or url (a server), not "
                             + ("both" if self.env else "neither"))
        if self.kwargs and self.env is None:
            raise ValueError("kwargs are env's constructor arguments: a server builds its own environments")
        if self.action is not None and self.action_field is not None:
            raise ValueError("give action (a function) or action_field, not both")
        if importlib.util.find_spec("openenv") is None:
            raise ValueError(INSTALL)
        return self


class OpenEnvEpisode(Episode):
    """One OpenEnv session (an Environment instance here, or a WebSocket session) plays one episode."""

    def __init__(self, bridge: OpenEnvBridge, session: Any, messages: list[dict[str, Any]]):
        super().__init__(messages)
        self.bridge, self.session = bridge, session
        self.closed = False

    def step(self, message: dict[str, Any]) -> Reply:
        return self.bridge.loop.run(self._step(message["content"]))

    async def step_async(self, message: dict[str, Any]) -> Reply:
        return await self.bridge.loop.run_async(self._step(message["content"]))

    async def _step(self, text: str) -> Reply:
        observed = await self.session.step(self.bridge.to_action(text))
        return Reply(self.bridge.to_messages(observed.fields), reward=observed.reward, done=observed.done,
                     info=observed.metadata)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.bridge.loop.run(self.session.close())


class OpenEnvBridge(Environment):
    """An OpenEnv environment, in this process (``env``) or behind its server (``url``)."""

    name = "openenv"
    Options = OpenEnvOptions

    def __init__(self, options: OpenEnvOptions, context: PluginContext):
        super().__init__(options, context)
        o = options
        where = f"environment 'openenv' ({o.env or o.url})"
        self.factory = _load(o.env, "env", context) if o.env else None
        self.action_cls = sessions.action_class_of(self.factory) if self.factory is not None else None
        self._to_action = _load(o.action, "action", context) if o.action else None
        self._to_messages = _load(o.observation, "observation", context) if o.observation else None
        if inspect.isclass(self.factory) and o.reset_columns:
            _check_reset_takes(self.factory, o.reset_columns)
        self.text_field = None if self._to_action else self._text_field(where)
        self.loop = sessions.Loop()

    def _text_field(self, where: str) -> str:
        """The action field the assistant's text fills: ``action_field``, else the action's one str field."""
        o = self.options
        if self.factory is not None:
            if self.action_cls is None:
                raise UserError(f"{where}: cannot tell which Action class it steps with (neither step()'s "
                                "annotation nor its Environment[...] base names one): give action: module:name")
            text, required = sessions.text_fields_of(self.action_cls)
            what = f"action {self.action_cls.__name__}"
        else:
            try:
                text, required = sessions.server_action_fields(o.url, o.timeout)
            except Exception as e:  # noqa: BLE001 - a server that does not answer is the user's to start
                raise UserError(f"{where}: cannot read the server's action schema at /schema "
                                f"({type(e).__name__}: {e}); is the server running?") from None
            what = "the server's action"
        if o.action_field is not None:
            if o.action_field not in text:
                raise UserError(f"{where}: action_field '{o.action_field}' is not a str field of {what} "
                                f"(its str fields: {', '.join(text) or 'none'})")
            field = o.action_field
        elif len(text) != 1:
            raise UserError(f"{where}: {what} has {len(text)} str fields ({', '.join(text) or 'none'}): name the "
                            "one the text goes into with action_field, or give action: module:name")
        else:
            field = text[0]
        if others := [r for r in required if r != field]:
            raise UserError(f"{where}: {what} also requires {', '.join(others)}: give action: module:name")
        return field

    def reset(self, row: dict[str, Any], seed: int, episode_id: str) -> Episode:
        return self.loop.run(self._open(row, seed, episode_id))

    async def reset_async(self, row: dict[str, Any], seed: int, episode_id: str) -> Episode:
        return await self.loop.run_async(self._open(row, seed, episode_id))

    async def _open(self, row: dict[str, Any], seed: int, episode_id: str) -> Episode:
        o = self.options
        missing = [c for c in o.reset_columns if c not in row]
        if missing:
            raise KeyError(f"reset_columns: the row has no column {missing[0]!r}")
        if self.factory is not None:
            session = sessions.InProcess(self.factory, o.kwargs, self.action_cls)
        else:
            session = sessions.Remote(o.url, o.timeout)
        try:
            observed = await session.reset(seed=seed, episode_id=episode_id, **{c: row[c] for c in o.reset_columns})
        except BaseException:
            await session.close()
            raise
        messages = _prompt(row) if o.show_prompt else []
        return OpenEnvEpisode(self, session, messages + self.to_messages(observed.fields))

    def to_action(self, text: str) -> Any:
        return self._to_action(text) if self._to_action else {self.text_field: text}

    def to_messages(self, fields: dict[str, Any]) -> list[dict[str, Any]]:
        shown = self._to_messages(fields) if self._to_messages else _text_of(fields)
        if shown is None:
            return []
        if isinstance(shown, str):
            return [{"role": self.options.role, "content": shown}] if shown else []
        if isinstance(shown, list) and all(isinstance(m, dict) and "role" in m for m in shown):
            return shown
        raise TypeError(f"observation function {self.options.observation} returned {type(shown).__name__}: "
                        "expected a str, a list of messages ({'role': ..., 'content': ...}) or None")

    def close(self) -> None:
        self.loop.close()


def _text_of(fields: dict[str, Any]) -> str:
    """The observation's non-empty str fields: the text alone when there is one, else ``name: value`` lines."""
    text = {k: v for k, v in fields.items() if k != "metadata" and isinstance(v, str) and v}
    if len(text) == 1:
        return next(iter(text.values()))
    return "\n".join(f"{k}: {v}" for k, v in text.items())


def _prompt(row: dict[str, Any]) -> list[dict[str, Any]]:
    prompt = row.get("prompt")
    if not prompt:
        return []
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def _check_reset_takes(factory: type, columns: list[str]) -> None:
    """In this process reset() is called directly: a column it does not take would fail every episode."""
    params = inspect.signature(factory.reset).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    if not_taken := [c for c in columns if c not in params]:
        raise UserError(f"environment 'openenv': {factory.__name__}.reset() takes no argument "
                        f"{not_taken[0]!r} (reset_columns)")


def _load(spec: str, key: str, context: PluginContext) -> Any:
    """``module:name`` or ``PATH.py:name`` beside the recipe, imported the way ``python recipe.py`` would."""
    return context.load_callable(spec, key, "environment 'openenv'")


@hookimpl
def frl_register_environments(register):
    register(OpenEnvBridge)
