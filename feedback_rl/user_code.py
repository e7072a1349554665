"""A function the user names in a recipe, ``PATH.py:name`` (relative to the recipe) or ``module:name`` (the
recipe's folder first on sys.path, as ``python recipe.py`` would find it), loaded once: an agent, a custom rule
check, an OpenEnv environment or its hooks. Every problem is one line (:class:`RefError`) that the caller
prefixes with what it was loading for."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

_MISSING = object()


class RefError(ValueError):
    """What is wrong with a ``PATH.py:name`` or ``module:name`` reference, in one line."""


def load_callable(ref: str, base_dir: Path, what: str) -> Callable[..., Any]:
    """The callable ``ref`` names (``name`` may be dotted: ``Class.method``); ``what`` names it in errors."""
    where, sep, name = ref.rpartition(":")
    if not sep or not where or not name or not all(p.isidentifier() for p in name.split(".")):
        raise RefError(f"expected PATH.py:function or module:function, got {ref!r}")
    if where.endswith(".py"):
        path = Path(where).expanduser()
        path = path if path.is_absolute() else Path(base_dir) / path
        if not path.is_file():
            raise RefError(f"file not found: {where}")
        obj: Any = _attr(_from_file(path.resolve()), name)
        if obj is _MISSING:
            raise RefError(f"{where} has no function '{name}'")
    else:
        folder = str(Path(base_dir).resolve())
        if folder not in sys.path:
            sys.path.insert(0, folder)
        try:
            obj = _attr(importlib.import_module(where), name)
            if obj is _MISSING:
                raise AttributeError(f"module '{where}' has no attribute '{name}'")
        except Exception as e:  # noqa: BLE001 - any failure to import is the user's to fix
            raise RefError(f"cannot import {what} '{ref}' (looked in {folder} and sys.path): "
                           f"{type(e).__name__}: {_first_line(e)}") from None
    if not callable(obj):
        raise RefError(f"{what} '{ref}' is not callable")
    return obj


def _attr(module: ModuleType, dotted: str) -> Any:
    obj: Any = module
    for part in dotted.split("."):
        obj = getattr(obj, part, _MISSING)
        if obj is _MISSING:
            break
    return obj


def _from_file(path: Path) -> ModuleType:
    """The module at ``path``, imported once per process under a name of its own (its folder on sys.path, so
    it may import files beside it)."""
    key = f"frl_user_{abs(hash(str(path)))}"
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
        raise RefError(f"{path.name} failed to import: {type(e).__name__}: {_first_line(e)}") from None
    return module


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [""])[0]
