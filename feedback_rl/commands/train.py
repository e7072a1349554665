"""Running a recipe in this process: load it, open (or find, to resume) its run folder, train.

``frl train`` calls :func:`train_recipe`; so do tests and notebooks. Under several processes rank 0
opens the folder and every rank trains in it. The process holds the folder for as long as it trains
(``Run.hold``), so no second process trains in it and ``frl runs`` can tell running from killed.
"""
from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from feedback_rl.run import checkpoint as ckpt
from feedback_rl.hookspecs import hookimpl
from feedback_rl.run.distributed import Dist
from feedback_rl.loop.engine import Engine
from feedback_rl.run.preflight import StageData, check as preflight, probe
from feedback_rl.errors import RunFailed, RunStopped, UserError
from feedback_rl.config.recipe import Recipe
from feedback_rl.run import writes
from feedback_rl.run.folder import Held, Run, RunBusy


def train_recipe(recipe: Recipe | str | Path, overrides: list[str] = (), pm: Any = None,
                 progress: bool = False, resume: bool | str | Path = False, say: Any = None,
                 command: list[str] | None = None, data: list[StageData] | None = None) -> tuple[Run, dict[str, Any]]:
    """Run a recipe in this process (``frl train``; also for tests and notebooks).

    ``resume``: True continues the newest unfinished run of the recipe, a path names the run folder
    (see :mod:`feedback_rl.run.resume`). ``command``: the words that start this run again (``frl train
    r.yaml --set ...``), for the message a stopped run prints. A fresh run that fails before its first
    step leaves no folder behind.
    """
    from feedback_rl.config import recipe as recipes
    from feedback_rl.plugins import build_registry, default
    if pm is None:
        pm, reg = default()
    else:
        reg = build_registry(pm)
    rec = recipe if isinstance(recipe, Recipe) else recipes.load(recipe, list(overrides), reg)
    command = command or ["frl", "train", str(rec.path), *(f"--set={o}" for o in overrides)]
    if data is None:  # every stage's mistakes, before a run folder opens or a model loads
        data = preflight(rec, reg)
    probe(rec, reg)  # a judge that is down, found before a run folder opens or a model loads
    dist = Dist()
    opened = open_run(rec, resume, say or (lambda msg: None), dist, pm, command)
    watch = _FirstStep()
    pm.register(watch, name="_frl_first_step")  # the core's own observer: no plugin of the lock
    from feedback_rl.run.resume import continue_command
    again = continue_command(command, opened.run.dir)
    try:
        engine = Engine(rec, pm, reg, opened.run, progress=progress, resume=opened.checkpoint, dist=dist, data=data)
        try:
            return opened.run, engine.train()
        except RunStopped as e:
            if engine.signal:  # stopped by SIGINT/SIGTERM after a checkpoint: say how to go on, exactly
                raise RunStopped(f"{e}; continue with: {again}") from None
            raise
        except KeyboardInterrupt as e:
            if engine.signal:  # a second signal stops at once: say what was lost and what is kept
                latest = ckpt.latest(opened.run.dir)
                raise KeyboardInterrupt(
                    f"a second signal stopped the run at once{f': {e}' if str(e) else ''}; --resume continues "
                    f"from {f'checkpoint {latest.name}' if latest else 'the beginning (no checkpoint yet)'}: "
                    f"{again}") from None
            raise
    except RunStopped:
        raise  # stopped by its own verdict (a health limit, a source's errors): the folder shows why
    except BaseException as e:
        removed = opened.created and not watch.seen and opened.run.dir.exists()
        if removed:
            shutil.rmtree(opened.run.dir)  # a failed start: nothing in it to resume or keep
            if isinstance(e, KeyboardInterrupt):
                raise KeyboardInterrupt(f"stopped before its first step; {opened.run.dir} was removed (nothing in "
                                        "it to resume)") from None
        if (failed := writes.failure(e, opened.run.dir)) is not None:  # a full disk: one line, not tracebacks
            raise RunFailed(f"{failed}" + ("" if removed else f"; make room, then continue with: {again}")) from None
        raise
    finally:
        pm.unregister(watch)
        opened.release()


@dataclass
class Opened:
    run: Run
    checkpoint: Path | None
    created: bool              # this call made the folder (rank 0)
    held: Held | None = None

    def release(self) -> None:
        if self.held is not None:
            self.held.release()


def open_run(rec: Recipe, resume: bool | str | Path, say: Callable[[str], None], dist: Dist, pm: Any,
             command: list[str]) -> Opened:
    """Rank 0 creates (or finds, to resume) and holds the run folder; every rank gets the same folder."""
    from feedback_rl.plugins import plugin_versions
    from feedback_rl.run.resume import find
    found: tuple[Any, Any, str | None] = (None, None, None)
    opened = None
    if dist.main:
        run = None
        try:
            if resume:
                r = find(rec, None if resume is True else resume, shlex.join(command))
                opened = Opened(r.run, r.checkpoint, False, r.run.hold())
                if r.checkpoint is None:  # killed before its first checkpoint: it starts over, here
                    ckpt.truncate_logs(r.run.dir, {})
                r.run.write_lock(rec, plugin_versions(pm))  # the same so far; later stages may have changed
                for line in r.damaged:
                    say(f"warning: {line}")
                newest = ", the newest intact one" if r.damaged else ""
                say(f"run: {r.run.dir} (resuming " + (f"from checkpoint {r.checkpoint.name}{newest})" if r.checkpoint
                                                      else "from the beginning: it had no checkpoint yet)"))
                if r.others:
                    say(f"note: {', '.join(map(str, r.others))} unfinished too; --resume RUN_DIR continues one")
            else:
                run = Run.create(Path(rec.output_dir), rec.name)
                opened = Opened(run, None, True, run.hold())
                run.write_lock(rec, plugin_versions(pm))
                say(f"run: {run.dir}")
            opened.run.write_status({"status": "running"})
            found = (opened.run.dir, opened.checkpoint, None)
        except (UserError, RunBusy, RunFailed) as e:  # RunFailed: no room for the lock or the status
            if opened is not None:
                opened.release()
            if run is not None:
                shutil.rmtree(run.dir, ignore_errors=True)
            found = (None, None, (isinstance(e, RunFailed), str(e)))
    run_dir, checkpoint, error = dist.broadcast(found)
    if error:
        raise (RunFailed if error[0] else UserError)(error[1])
    return opened or Opened(Run(run_dir.name, run_dir), checkpoint, False)


class _FirstStep:
    """Whether a training step finished (rank 0 sees every step's hook)."""

    seen = False

    @hookimpl
    def frl_step_end(self, stage: str, step: int, metrics: dict) -> None:
        self.seen = True
