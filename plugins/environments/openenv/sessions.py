"""How the ``openenv`` bridge talks to OpenEnv: one session per episode, in this process or over a WebSocket.

Both kinds answer in the wire shape of OpenEnv's server (``serialize_observation``): the observation's fields
as a dict (no ``reward``, no ``done``), the step's reward, done, and metadata. So the hooks that turn text into
an action and an observation into messages see the same thing whether the environment runs here or behind
``url``, and a recipe moves between the two by changing one key.

Every session lives on one event loop of the bridge's own, in a thread (:class:`Loop`). OpenEnv's WebSocket
client is bound to the loop it connected on: on another loop it reconnects, which opens a new server session
and loses the episode. The core awaits each turn's steps on a fresh loop, so the sessions cannot live there.
openenv is imported here only, when a bridge is built: ``frl plugins`` and ``frl validate`` work without it.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import threading
import typing
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Coroutine


@dataclass
class Observed:
    """One answer of an OpenEnv environment, as its server sends it."""

    fields: dict[str, Any]                       # the observation without reward and done
    reward: float | None = None
    done: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)


class Loop:
    """An event loop in a daemon thread: every OpenEnv session of one bridge is opened, stepped and closed on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="openenv-bridge", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine) -> Any:
        """Run ``coro`` on the bridge's loop and wait for it (from a thread that is not the loop's)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def run_async(self, coro: Coroutine) -> Any:
        """Await ``coro`` on the bridge's loop from another loop: the core's steps of a turn run together."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
        if not self.loop.is_running():
            self.loop.close()


# ---------------------------------------------------------------------------------------------- in this process
def action_class_of(factory: Any) -> type | None:
    """The Action class an OpenEnv Environment (sub)class steps with: ``step``'s annotation, else the first
    argument of its ``Environment[ActT, ObsT, StateT]`` base; for a function, those of the class its return
    annotation names. None when nothing names one."""
    from openenv.core.env_server.types import Action
    env_cls = factory
    if not inspect.isclass(factory):
        try:
            env_cls = typing.get_type_hints(factory).get("return")
        except Exception:  # noqa: BLE001 - an annotation that does not resolve names nothing
            env_cls = None
        if not inspect.isclass(env_cls):
            return None
    try:
        hinted = typing.get_type_hints(env_cls.step).get("action")
    except Exception:  # noqa: BLE001 - an annotation that does not resolve names nothing
        hinted = None
    if isinstance(hinted, type) and issubclass(hinted, Action) and hinted is not Action:
        return hinted
    for klass in getattr(env_cls, "__mro__", ()):
        for base in getattr(klass, "__orig_bases__", ()):
            args = typing.get_args(base)
            if args and isinstance(args[0], type) and issubclass(args[0], Action) and args[0] is not Action:
                return args[0]
    return None


def text_fields_of(action_cls: type) -> tuple[list[str], list[str]]:
    """(the action's str fields, its required fields), ``metadata`` left out: what the default action fills."""
    text = [name for name, f in action_cls.model_fields.items() if name != "metadata" and f.annotation is str]
    required = [name for name, f in action_cls.model_fields.items() if f.is_required()]
    return text, required


class InProcess:
    """One OpenEnv Environment instance, made by ``factory(**kwargs)``, plays one episode here."""

    def __init__(self, factory: Any, kwargs: dict[str, Any], action_cls: type | None):
        self.env = factory(**kwargs)
        self.action_cls = action_cls

    async def reset(self, **kwargs: Any) -> Observed:
        return _observed(await self.env.reset_async(**kwargs))

    async def step(self, action: Any) -> Observed:
        if isinstance(action, dict):
            if self.action_cls is None:
                raise TypeError("the action function returned a dict, and nothing names the environment's Action "
                                "class to build from it: return the Action itself")
            action = self.action_cls.model_validate(action)
        return _observed(await self.env.step_async(action))

    async def close(self) -> None:
        close = getattr(self.env, "close", None)
        if close is not None:
            result = close()
            if inspect.isawaitable(result):
                await result


def _observed(observation: Any) -> Observed:
    """An Observation as OpenEnv's server would send it."""
    from openenv.core.env_server.serialization import serialize_observation
    wire = serialize_observation(observation)
    return Observed(wire["observation"], _reward(wire["reward"]), bool(wire["done"]), dict(wire.get("metadata") or {}))


# ---------------------------------------------------------------------------------------------- a server
class Remote:
    """One WebSocket session with an OpenEnv server (OpenEnv's own ``GenericEnvClient``) plays one episode: the
    server keeps one environment per connection, while its HTTP /reset and /step make a new one per call."""

    def __init__(self, url: str, timeout: float):
        from openenv.core import GenericEnvClient
        self.url = url
        self.client = GenericEnvClient(base_url=url, message_timeout_s=timeout)

    async def reset(self, **kwargs: Any) -> Observed:
        try:
            return self._observed(await self.client.reset(**kwargs))
        except RuntimeError as e:
            if "CAPACITY_REACHED" in str(e):
                raise RuntimeError(f"{e}: the server at {self.url} takes fewer sessions than the episodes of a "
                                   "step (rows x num_generations); start it with a larger max_concurrent_envs"
                                   ) from None
            raise

    async def step(self, action: Any) -> Observed:
        return self._observed(await self.client.step(action))

    async def close(self) -> None:
        await self.client.close()

    @staticmethod
    def _observed(result: Any) -> Observed:
        fields = dict(result.observation or {})
        return Observed(fields, _reward(result.reward), bool(result.done),
                        dict(result.metadata or fields.get("metadata") or {}))


def server_action_fields(url: str, timeout: float) -> tuple[list[str], list[str]]:
    """(the str fields, the required fields) of the action a server takes, from its ``/schema``."""
    base = url.rstrip("/")
    for ws, http in (("wss://", "https://"), ("ws://", "http://")):
        if base.startswith(ws):
            base = http + base[len(ws):]
    with urllib.request.urlopen(f"{base}/schema", timeout=timeout) as response:  # noqa: S310 - the recipe's url
        schema = json.load(response)["action"]
    props = schema.get("properties", {})
    text = [name for name, p in props.items() if name != "metadata" and p.get("type") == "string"]
    return text, list(schema.get("required", []))


def _reward(value: Any) -> float | None:
    return None if value is None else float(value)
