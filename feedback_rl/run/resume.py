"""Which run ``--resume`` continues, from which checkpoint, and refusing one that must not be.

A finished run is never resumed: its folder is never written into again. An unfinished run resumes
from its latest complete checkpoint, or, killed before its first checkpoint, starts again from the
beginning in its own folder (nothing of it was kept, and its folder is not burned).
A checkpoint whose files are not as they were saved is passed over, by name, for the newest intact
one; when every checkpoint is damaged, nothing resumes (training on damaged weights would end
"finished" over garbage).

The recipe must compute what the run computed so far: every key that changes a result (model, seed,
data and its content, each begun stage's optimizer, sources, rollout, training, eval and health
settings, every plugin option with its default filled in) is compared with the lock, for the top level
and for each stage the checkpoint has begun. Stages not begun yet may change (a mistake found in stage 2
is fixed and the run resumes at stage 2, without training stage 1 again), stages may be added after
them, and the lock is then rewritten: the run is what the new recipe computes. Keys that change only
where results go or how often a run is saved may always differ (:data:`FREE`): the run's name and
output folder, its loggers, ``checkpoint.every``/``keep`` and how often a health warning repeats.
Progress bars are a command-line flag, never part of a recipe.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feedback_rl.run import checkpoint as ckpt
from feedback_rl.run import folder as runs
from feedback_rl.errors import UserError
from feedback_rl.config.recipe import Recipe
from feedback_rl.run.folder import Run

FREE = (("name",), ("output_dir",), ("loggers",), ("stages", "*", "checkpoint"),
        ("stages", "*", "health", "warn_every"))


@dataclass
class Resumable:
    run: Run
    checkpoint: Path | None  # None: no checkpoint yet; the run starts over in its folder
    others: list[Path]       # other unfinished runs of the recipe, newest first
    damaged: list[str]       # a line for each newer checkpoint passed over as damaged


def find(recipe: Recipe, run_dir: str | Path | None = None, command: str = "") -> Resumable:
    """The run to resume: ``run_dir``, or the newest unfinished run of the recipe. ``command`` is how
    the user started this (``frl train r.yaml ...``), for the messages."""
    out = Path(recipe.output_dir)
    fresh = f"start a new run with `{command}` (without --resume)" if command else "start a new run without --resume"
    if run_dir is not None:
        chosen = Path(run_dir)
        if not (chosen / runs.LOCK).is_file():
            hint = f"; the run folder is {chosen.parent}" if (chosen.parent / runs.LOCK).is_file() else ""
            raise UserError(f"--resume {chosen}: not a run folder (no {runs.LOCK}){hint}")
        others: list[Path] = []
    else:
        candidates = runs.runs_of(out, recipe.name)
        if not candidates:
            raise UserError(f"--resume: nothing to resume: no run of '{recipe.name}' in {out}; {fresh}")
        busy = [d for d in candidates if runs.status(d) == "running"]
        open_ = [d for d in reversed(candidates) if runs.status(d) not in ("finished", "running")]
        if not open_:
            if busy and len(busy) == len(candidates):
                raise UserError(f"--resume: nothing to resume: {busy[-1]} is running ({runs.holder(busy[-1])})")
            done = [d for d in candidates if runs.status(d) == "finished"]
            raise UserError(f"--resume: nothing to resume: every run of '{recipe.name}' in {out} finished "
                            f"(newest: {done[-1]}); {fresh}, or train on from its model as a new run with "
                            f"--set model.path={done[-1] / 'final'}")
        chosen, others = open_[0], open_[1:]
    state = runs.status(chosen)
    if state == "finished":
        raise UserError(f"--resume {chosen}: that run finished, and a finished run is never resumed or "
                        f"extended; {fresh}, or train on from its model as a new run with "
                        f"--set model.path={chosen / 'final'}")
    if state == "running":
        raise UserError(f"--resume {chosen}: that run is still running ({runs.holder(chosen)}); "
                        f"stop it first (Ctrl-C or SIGTERM saves a checkpoint)")
    latest, damaged = ckpt.intact(chosen)
    if damaged and latest is None:
        more = f" (and {len(damaged) - 1} older: {'; '.join(damaged[1:])})" if len(damaged) > 1 else ""
        raise UserError(f"cannot resume {chosen}: {damaged[0]}{more}; no intact checkpoint is left to resume "
                        f"from; {fresh}")
    check_compatible(runs.read_lock(chosen) or {}, recipe, chosen, ckpt.stages_begun(latest))
    return Resumable(Run(chosen.name, chosen), latest, others, damaged)


def check_compatible(lock: dict[str, Any], recipe: Recipe, run_dir: Path, begun: int) -> None:
    """Refuse a recipe that would not compute what the run computed in its first ``begun`` stages
    (and at the top level), naming the first difference."""
    old = dict(lock.get("resolved") or lock.get("recipe") or {})
    new = runs.resolved(recipe) if "resolved" in lock else recipe.model_dump(mode="json")
    done = [_name(s) for s in old.get("stages", [])[:begun]]
    if [_name(s) for s in new["stages"][:begun]] != done:
        changes = [f"stages: {', '.join(map(_name, old.get('stages', [])))} → "
                   f"{', '.join(map(_name, new['stages']))} (the run has begun {', '.join(done)})"]
    else:
        old["stages"], new["stages"] = old.get("stages", [])[:begun], new["stages"][:begun]
        changes = diff(old, new)
    old_data, new_data = lock.get("data") or {}, runs.data_hashes(recipe)
    for key in sorted(set(old_data) & set(new_data)):
        if int(key.split("]")[0].removeprefix("stages[")) < begun and old_data[key] != new_data[key]:
            changes.append(f"{key}: the file's content changed since the run started "
                           f"(sha256 {old_data[key][:12]} → {new_data[key][:12]})")
    if changes:
        more = f" (and {len(changes) - 1} more: {'; '.join(changes[1:4])}{' ...' if len(changes) > 4 else ''})" \
            if len(changes) > 1 else ""
        raise UserError(f"cannot resume {run_dir}: the recipe differs from the run's lock in "
                        f"{changes[0]}{more}; resume with the recipe it was started with (its lock, "
                        f"{run_dir / runs.LOCK}, holds it), or start a new run without --resume")


def diff(old: Any, new: Any, path: tuple = ()) -> list[str]:
    """Each difference that changes the result, as ``key.path: old → new``."""
    if _free(path):
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            if key not in new or key not in old:
                if _free(path + (key,)):
                    continue
                out.append(f"{_dotted(path + (key,))}: {_show(old.get(key, '(unset)'))} → "
                           f"{_show(new.get(key, '(unset)'))}")
            else:
                out += diff(old[key], new[key], path + (key,))
        return out
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{_dotted(path)}: {len(old)} items → {len(new)} items"]
        return [d for k, (a, b) in enumerate(zip(old, new)) for d in diff(a, b, path + (k,))]
    return [] if old == new else [f"{_dotted(path)}: {_show(old)} → {_show(new)}"]


def _free(path: tuple) -> bool:
    return any(len(path) >= len(p) and all(a == "*" or a == b for a, b in zip(p, path)) for p in FREE)


def _name(stage: Any) -> str:
    return str(stage.get("name")) if isinstance(stage, dict) else "?"


def _dotted(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(value: Any) -> str:
    if isinstance(value, str) and value != "(unset)":
        return repr(value)
    return value if isinstance(value, str) else json.dumps(value)


def continue_command(command: list[str], run_dir: Path) -> str:
    """The exact command that resumes ``run_dir``: the words that started the run, and ``--resume RUN_DIR``."""
    return shlex.join([*command, "--resume", str(run_dir)])
