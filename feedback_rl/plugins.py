"""The plugin manager and the registry of plugin classes.

Plugins are found through the entry-point group ``feedback_rl`` (the built-in ones too).
``FRL_LOAD_PLUGINS=a,b`` loads only the named entry points or distributions (empty: none).
``FRL_TRACE_PLUGINS=1`` prints every hook call to stderr.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pluggy

from feedback_rl import hookspecs
from feedback_rl.errors import UserError, did_you_mean

GROUP = "feedback_rl"
KINDS = ("reward_sources", "optimizers", "backends", "loggers", "datasets", "environments")
_KIND_WORD = {"reward_sources": "reward source", "optimizers": "optimizer",
              "backends": "backend", "loggers": "logger", "datasets": "data source",
              "environments": "environment"}


def get_plugin_manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    """A new plugin manager with the hookspecs and the installed plugins loaded."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    if load_entry_points:
        allow = os.environ.get("FRL_LOAD_PLUGINS")
        if allow is None:
            pm.load_setuptools_entrypoints(GROUP)
        else:
            wanted = {w.strip() for w in allow.split(",") if w.strip()}
            found = list(entry_points(group=GROUP))
            known = {ep.name for ep in found} | {ep.dist.name for ep in found if ep.dist}
            for name in sorted(wanted - known):
                raise UserError(f"FRL_LOAD_PLUGINS: no installed plugin or distribution '{name}'"
                                f"{did_you_mean(name, known)}; installed: {', '.join(sorted(known))}")
            for ep in found:
                dist = ep.dist.name if ep.dist else ""
                if (ep.name in wanted or dist in wanted) and pm.get_plugin(ep.name) is None:
                    pm.register(ep.load(), name=ep.name)
    if os.environ.get("FRL_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda msg: print(msg, end="", file=sys.stderr))
        pm.enable_tracing()
    return pm


@dataclass
class Registry:
    """Plugin classes by kind and name, and which plugin registered each."""

    classes: dict[str, dict[str, type]] = field(default_factory=lambda: {k: {} for k in KINDS})
    origin: dict[tuple[str, str], str] = field(default_factory=dict)

    def get(self, kind: str, name: str, where: str = "") -> type:
        table = self.classes[kind]
        if name not in table:
            known = ", ".join(sorted(table)) or "none installed"
            prefix = f"{where}: " if where else ""
            raise UserError(f"{prefix}unknown {_KIND_WORD[kind]} {name!r}{did_you_mean(name, table)}; "
                            f"installed: {known}")
        return table[name]


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """Call every registration hook; two plugins registering one name is an error naming both."""
    reg = Registry()
    for kind in KINDS:
        def register(cls: type, _kind: str = kind) -> None:
            name = getattr(cls, "name", "") or ""
            if not name:
                raise UserError(f"plugin class {cls.__module__}.{cls.__qualname__} has no `name`")
            owner = _owner(pm, cls)
            if _kind == "datasets" and name not in getattr(getattr(cls, "Options", None), "model_fields", {}):
                # the recipe names a data source by its key: {name: VALUE, ...} is validated by its Options
                raise UserError(f"data source '{name}' ({owner}): its Options needs a field named '{name}'")
            if name in reg.classes[_kind] and reg.classes[_kind][name] is not cls:
                raise UserError(f"{_KIND_WORD[_kind]} '{name}' is registered twice: by {reg.origin[(_kind, name)]} "
                                f"and by {owner}")
            reg.classes[_kind][name] = cls
            reg.origin[(_kind, name)] = owner
        getattr(pm.hook, f"frl_register_{kind}")(register=register)
    return reg


def _owner(pm: pluggy.PluginManager, cls: type) -> str:
    module = sys.modules.get(cls.__module__)
    plugin_name = pm.get_name(module) if module is not None and pm.is_registered(module) else None
    if plugin_name and plugin_name != cls.__module__:
        return f"plugin '{plugin_name}' ({cls.__module__})"
    return f"plugin '{cls.__module__}'"


def plugin_versions(pm: pluggy.PluginManager) -> dict[str, str]:
    """Each loaded plugin's name and its distribution version, however it was loaded (all entry points,
    or the ``FRL_LOAD_PLUGINS`` allowlist)."""
    dists = {ep.name: ep.dist for ep in entry_points(group=GROUP) if ep.dist}
    return {name: f"{dists[name].name} {dists[name].version}" if name in dists else "(not from a distribution)"
            for name, _ in pm.list_name_plugin() if not name.startswith("_frl_")}


_default: tuple[pluggy.PluginManager, Registry] | None = None


def default() -> tuple[pluggy.PluginManager, Registry]:
    """The process-wide manager and registry, built on first use."""
    global _default
    if _default is None:
        pm = get_plugin_manager()
        _default = (pm, build_registry(pm))
    return _default


def reset() -> None:
    """Forget the process-wide manager (tests that change the environment)."""
    global _default
    _default = None
