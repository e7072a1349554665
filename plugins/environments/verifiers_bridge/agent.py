"""The agent that plays one row's verifiers task through the core's endpoint: ``agent(row, client) -> reward``.

    # agent.py, named by a stage's `agent: agent.py:agent`
    from frl_plugins.environments.verifiers_bridge.agent import taskset_agent
    agent = taskset_agent(tokenizer="models/policy", max_turns=4)

For each row (made by the ``verifiers`` data source) it runs one verifiers rollout of the row's task: the
harness program talks to verifiers' interception server, whose client calls the endpoint ``client`` points at.
With ``client="train"`` (the default) that is verifiers' training client: it renders the prompt with the
policy's tokenizer and POSTs token ids to ``/inference/v1/generate``, extending the previous turn's ids; with
``"eval"`` it forwards chat completions. Every call carries the core's session: verifiers sends its trace id as
``X-Session-ID``, so the trace is given the session's id when it is minted. The reward is the trace's (the sum of
the task's weighted rewards); a rollout that failed raises, so the core scores it an error, never a zero.
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import re
import shutil
import tempfile
import threading
import urllib.request
from pathlib import Path
from typing import Any, Literal

from . import tasksets
from .install import offline_uv, verifiers_v1

SESSION_HEADER = "X-Session-ID"
API_KEY_VAR = "FRL_VERIFIERS_API_KEY"  # verifiers reads an endpoint's key from an environment variable
# verifiers names the rollout's working folder after the trace id, so a session id must be a plain name
PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


def taskset_agent(*, harness: str = "null", max_turns: int | None = None, client: Literal["train", "eval"] = "train",
                  tokenizer: str | None = None, renderer: dict[str, Any] | None = None,
                  sampling: dict[str, Any] | None = None, timeout_s: float | None = 600.0) -> "TasksetAgent":
    """An agent playing the row's verifiers task. ``harness``: a verifiers harness id (``null`` is its plain chat
    loop, with the task's MCP tools); ``tokenizer``: the policy's model folder, whose tokenizer and chat template
    the training client renders prompts with (required for ``client="train"``: the endpoint's model card names
    none); ``renderer``: the training client's renderer, a ``renderers.RendererConfig`` as a dict (e.g.
    ``{"name": "qwen3"}``, or ``{"name": "default", "tool_parser": "qwen3"}``); without one verifiers picks it by
    the tokenizer's name, and a model folder's name is in no renderer map, so it gets ``DefaultRenderer``, which
    parses no tool call and refuses every request that offers tools; ``sampling``: verifiers' sampling keys
    (max_tokens, ...; the core's endpoint samples with the stage's settings and honours max_tokens up to
    max_new_tokens); ``timeout_s``: the rollout's limit."""
    if client not in ("train", "eval"):
        raise ValueError(f"client is 'train' or 'eval', not {client!r}")
    if client == "train" and (tokenizer is None or not Path(tokenizer).is_dir()):
        raise ValueError("verifiers' training client renders prompts itself: give taskset_agent(tokenizer=...) the "
                         f"policy's model folder (got {tokenizer!r})")
    if renderer is not None and client != "train":
        raise ValueError("renderer is the training client's (client='train'); the eval client sends chat completions")
    return TasksetAgent(harness, max_turns, client, tokenizer, _renderer(renderer), sampling or {}, timeout_s)


def _renderer(config: dict[str, Any] | None) -> Any:
    """``config`` as a ``renderers.RendererConfig``; a one-line ValueError naming what is wrong."""
    if config is None:
        return None
    verifiers_v1()
    from pydantic import TypeAdapter, ValidationError
    from renderers import RendererConfig

    try:
        return TypeAdapter(RendererConfig).validate_python(config)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"taskset_agent(renderer={config!r}): {where + ': ' if where else ''}{first['msg']}") from None


class TasksetAgent:
    def __init__(self, harness: str, max_turns: int | None, client: str, tokenizer: str | None, renderer: Any,
                 sampling: dict[str, Any], timeout_s: float | None):
        self.harness, self.max_turns, self.client = harness, max_turns, client
        self.tokenizer, self.renderer, self.sampling, self.timeout_s = tokenizer, renderer, sampling, timeout_s
        self._envs: dict[str, Any] = {}
        self._stack: contextlib.AsyncExitStack | None = None
        self._lock: asyncio.Lock | None = None

    def __call__(self, row: dict[str, Any], client: Any) -> float:
        return float(self.episode(row, client).traces[0].reward)

    def episode(self, row: dict[str, Any], client: Any) -> Any:
        """The verifiers ``Episode`` of one rollout of the row's task; raises when the rollout failed."""
        spec = row.get("verifiers")
        if not isinstance(spec, dict):
            raise ValueError("the row has no 'verifiers' column: make the rows with data {verifiers: TASKSET}")
        return _loop().run(self._play(spec, Endpoint.of(client)))

    async def _play(self, spec: dict[str, Any], endpoint: "Endpoint") -> Any:
        vf = verifiers_v1()
        env = await self._env(spec["taskset"], spec.get("config") or {})
        task = tasksets.task(spec["taskset"], spec.get("config") or {}, int(spec["idx"]))
        model = await asyncio.to_thread(lambda: endpoint.model)  # a GET: kept off the loop the rollouts share
        ctx = vf.ModelContext(model=model, client=self._client_config(vf, endpoint),
                              sampling=vf.SamplingConfig(**self.sampling))

        def minted(trace: Any) -> None:
            if endpoint.session is not None:
                trace.id = endpoint.session  # verifiers sends the trace id as X-Session-ID on every call

        episode = await env.run_episode(task, ctx, on_trace=minted)
        errors = [e for t in episode.traces for e in t.errors] + list(episode.errors)
        if errors or not episode.traces:
            last = errors[-1] if errors else None
            raise RuntimeError(f"the verifiers rollout failed: {last.type}: {last.message}" if last
                               else "the verifiers rollout ran no agent")
        return episode

    def _client_config(self, vf: Any, endpoint: "Endpoint") -> Any:
        os.environ[API_KEY_VAR] = endpoint.api_key
        common = {"base_url": endpoint.base_url, "api_key_var": API_KEY_VAR}
        if self.client == "eval":
            return vf.EvalClientConfig(**common)
        return vf.TrainClientConfig(**common, renderer_model_name=self.tokenizer, renderer=self.renderer)

    async def _env(self, taskset_id: str, config: dict[str, Any]) -> Any:
        """One verifiers environment per taskset and config, serving (its interception server up) until exit."""
        key = json.dumps([taskset_id, config], sort_keys=True)
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if key not in self._envs:
                vf = verifiers_v1()
                offline_uv()
                _private_workdirs()
                agent = {"harness": {"id": self.harness}, "runtime": {"type": "subprocess"},
                         "max_turns": self.max_turns, "timeout": {"rollout": self.timeout_s}}
                env = vf.load_environment(vf.SingleAgentEnvConfig(
                    taskset={**config, "id": taskset_id}, agent=agent))
                if self._stack is None:
                    self._stack = contextlib.AsyncExitStack()
                await self._stack.enter_async_context(env.serving())
                self._envs[key] = env
        return self._envs[key]


def _private_workdirs() -> None:
    """Give this process its own folder for verifiers' subprocess runtimes.

    A runtime's working folder is named after its trace id, which is the core's session id here, and session ids
    repeat from run to run; verifiers creates the folder with ``exist_ok=False``. Under one shared folder, two runs
    at once (or one left behind by a killed run) would collide. The uv script cache stays shared.
    """
    from verifiers.v1.runtimes import subprocess as runtime

    if not getattr(runtime, "_frl_private", False):
        root = Path(tempfile.mkdtemp(prefix="frl-verifiers-"))
        atexit.register(shutil.rmtree, root, True)
        runtime.CACHE_DIR, runtime._frl_private = root, True


class Endpoint:
    """Where the core's client points: base URL, key, session, and the model it serves (``GET /models``)."""

    def __init__(self, base_url: str, api_key: str, session: str | None):
        if session is not None and not PLAIN_NAME.fullmatch(session):
            raise ValueError(f"session id {session!r} is not a plain name ([A-Za-z0-9._-], at most 128)")
        self.base_url, self.api_key, self.session = base_url.rstrip("/"), api_key, session
        self._card: dict[str, Any] | None = None

    @classmethod
    def of(cls, client: Any) -> "Endpoint":
        """From an official ``openai`` client (sync or async) made with the session as a default header."""
        headers = {k.lower(): v for k, v in dict(client.default_headers).items() if isinstance(v, str)}
        return cls(str(client.base_url), client.api_key, headers.get(SESSION_HEADER.lower()))

    def card(self) -> dict[str, Any]:
        if self._card is None:
            req = urllib.request.Request(f"{self.base_url}/models", headers={"Authorization": f"Bearer {self.api_key}"})
            with urllib.request.urlopen(req, timeout=30) as r:
                cards = json.loads(r.read())["data"]
            if not cards:
                raise RuntimeError(f"{self.base_url}/models lists no model")
            self._card = cards[0]
        return self._card

    @property
    def model(self) -> str:
        return self.card()["id"]


class _Loop:
    """One event loop in a thread for every rollout of the process: verifiers' interception servers and renderer
    pool live on a loop, and the core may call the agent from several threads at once."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="verifiers-bridge", daemon=True).start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


_LOOP: _Loop | None = None
_LOOP_LOCK = threading.Lock()


def _loop() -> _Loop:
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None:
            _LOOP = _Loop()
        return _LOOP
