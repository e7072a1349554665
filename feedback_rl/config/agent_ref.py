"""A stage's ``agent:`` reference, ``PATH.py:function`` (relative to the recipe) or ``package.module:function``,
loaded and checked: the function exists and takes ``(row, client)``. ``frl validate`` and ``frl train`` load it
the same way, before any model loads; every problem is one line naming the reference."""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, Callable


class AgentRefError(ValueError):
    """What is wrong with an ``agent:`` reference, in one line."""


def load_agent(ref: str, base_dir: Path) -> Callable[..., Any]:
    """The agent function ``ref`` names; raises :class:`AgentRefError`."""
    where, sep, name = ref.rpartition(":")
    if not sep or not where or not name or not name.isidentifier():
        raise AgentRefError(f"expected PATH.py:function or module:function, got {ref!r}")
    if where.endswith(".py"):
        path = Path(where).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if not path.is_file():
            raise AgentRefError(f"file not found: {where}")
        module = _from_file(path.resolve())
    else:
        folder = str(Path(base_dir).resolve())   # like `python recipe.py`: a module beside the recipe imports
        if folder not in sys.path:
            sys.path.insert(0, folder)
        try:
            module = importlib.import_module(where)
        except Exception as e:  # noqa: BLE001 - any failure to import is the user's to fix
            raise AgentRefError(f"cannot import {where}: {type(e).__name__}: {_first_line(e)}") from None
    fn = getattr(module, name, None)
    if fn is None:
        raise AgentRefError(f"{where} has no function '{name}'")
    if not callable(fn):
        raise AgentRefError(f"{where}:{name} is not a function")
    try:
        inspect.signature(fn).bind(None, None)
    except TypeError:
        raise AgentRefError(f"{where}:{name} must take (row, client): it is {name}{inspect.signature(fn)}") from None
    except ValueError:   # a builtin without a signature: it is called and answers for itself
        pass
    return fn


def _from_file(path: Path) -> Any:
    """The module at ``path``, imported once per process under a name of its own (its folder on sys.path, so
    it may import files beside it)."""
    key = f"frl_agent_{abs(hash(str(path)))}"
    if key in sys.modules:
        return sys.modules[key]
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[key] = module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as e:  # noqa: BLE001 - the user's file failed as it was imported
        del sys.modules[key]
        raise AgentRefError(f"{path.name} failed to import: {type(e).__name__}: {_first_line(e)}") from None
    return module


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [""])[0]
