"""A stage's ``agent:`` reference, ``PATH.py:function`` (relative to the recipe) or ``package.module:function``,
loaded and checked: the function exists and takes ``(row, client)``. ``frl validate`` and ``frl train`` load it
the same way, before any model loads; every problem is one line naming the reference."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

from feedback_rl.user_code import RefError, load_callable


class AgentRefError(ValueError):
    """What is wrong with an ``agent:`` reference, in one line."""


def load_agent(ref: str, base_dir: Path) -> Callable[..., Any]:
    """The agent function ``ref`` names; raises :class:`AgentRefError`."""
    try:
        fn = load_callable(ref, base_dir, "agent")
    except RefError as e:
        raise AgentRefError(str(e)) from None
    try:
        inspect.signature(fn).bind(None, None)
    except TypeError:
        name = ref.rpartition(":")[2]
        raise AgentRefError(f"{ref} must take (row, client): it is {name}{inspect.signature(fn)}") from None
    except ValueError:   # a builtin without a signature: it is called and answers for itself
        pass
    return fn
