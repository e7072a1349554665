"""Loading a verifiers v1 taskset by id, once per process, and the turns its tasks open with."""
from __future__ import annotations

import itertools
import json
from functools import lru_cache
from typing import Any

from .install import verifiers_v1


def check(taskset_id: str, config: dict[str, Any]) -> None:
    """A one-line ValueError when verifiers is missing, the taskset does not load with ``config``, or its own Env
    is not one the bridge can play."""
    _load(taskset_id, json.dumps(config, sort_keys=True))
    _one_seat(taskset_id)


def _one_seat(taskset_id: str) -> None:
    """The bridge builds each taskset's Env from ``SingleAgentEnvConfig``: one seat, ``agent``, whose calls are the
    core's session. A taskset module may export an Env of its own (how a multi-turn taskset answers the agent);
    one over another config (several seats, e.g. a modeled user beside the agent) would fail every rollout when
    verifiers builds it, after the model loaded, so it is refused here with verifiers' own rule."""
    from verifiers.v1.utils.generic import concrete_type

    vf = verifiers_v1()
    try:
        env = vf.environment_class(taskset_id)
    except Exception as e:  # noqa: BLE001 - an ambiguous export (two Env classes) is verifiers' ValueError
        raise ValueError(f"verifiers taskset {taskset_id!r}: {' '.join(str(e).split())}") from None
    takes = concrete_type(env, vf.EnvConfig, origin=vf.Env) or vf.EnvConfig
    if not issubclass(vf.SingleAgentEnvConfig, takes):
        raise ValueError(f"verifiers taskset {taskset_id!r} plays its tasks through {env.__name__}, whose config is "
                         f"{takes.__name__}: the bridge plays one seat per episode, so the Env must take "
                         "SingleAgentEnvConfig (subclass vf.SingleAgentEnv and write its run())")


@lru_cache(maxsize=8)
def _load(taskset_id: str, config_json: str) -> Any:
    vf = verifiers_v1()
    try:
        config = vf.taskset_config_type(taskset_id).model_validate({**json.loads(config_json), "id": taskset_id})
        return vf.load_taskset(config)
    except Exception as e:  # noqa: BLE001 - verifiers raises import, type and validation errors alike
        message = " ".join(str(e).split()) or type(e).__name__
        raise ValueError(f"verifiers taskset {taskset_id!r} did not load: {message}") from None


def tasks(taskset_id: str, config: dict[str, Any], size: int | None) -> list[Any]:
    """The first ``size`` tasks (every task when None; an infinite taskset needs a size)."""
    taskset = _load(taskset_id, json.dumps(config, sort_keys=True))
    if size is None and not taskset.bounded:
        raise ValueError(f"verifiers taskset {taskset_id!r} is infinite: give data's size")
    return list(itertools.islice(iter(taskset), size))


def task(taskset_id: str, config: dict[str, Any], idx: int) -> Any:
    """The task at position ``idx`` of the taskset."""
    for t in _load(taskset_id, json.dumps(config, sort_keys=True)).take(idx + 1):
        if t.data.idx == idx:
            return t
    raise ValueError(f"verifiers taskset {taskset_id!r} has no task {idx}")


def opening_turns(task: Any) -> list[dict[str, str]]:
    """The task's system prompt and prompt as chat turns (text only)."""
    data = task.data
    turns = [{"role": "system", "content": data.system_prompt}] if data.system_prompt else []
    if isinstance(data.prompt, str):
        turns.append({"role": "user", "content": data.prompt})
    else:
        for m in data.prompt or []:
            content = m.content if isinstance(m.content, str) else data.prompt_text
            turns.append({"role": m.role, "content": content or ""})
    return turns
