"""The ``frl`` command line. Plugins add subcommands through ``frl_register_commands``."""
from __future__ import annotations

import os
import sys

import click

from feedback_rl.errors import RunFailed, RunStopped, UserError

NEWEST = "\0newest"  # --resume without a value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="feedback_rl")
def cli() -> None:
    """Train language models from feedback."""


@cli.command()
@click.argument("recipe", required=False, type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe key.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--resume", "resume", is_flag=False, flag_value=NEWEST, default=None, metavar="[RUN_DIR]",
              help="Continue the newest unfinished run of RECIPE (or the run folder RUN_DIR) from its latest "
                   "checkpoint. A finished run is never resumed.")
@click.option("--num-processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train in N processes (accelerate launch: one per GPU, or gloo on CPU).")
def train(recipe: str | None, overrides: tuple[str, ...], no_progress: bool, resume: str | None,
          num_processes: int) -> None:
    """Run every stage of RECIPE."""
    from feedback_rl.run import preflight
    from feedback_rl.run.distributed import check_batches, launched, relaunch
    from feedback_rl.commands.summary import format_summary
    from feedback_rl.commands.train import train_recipe
    if recipe is None and resume not in (None, NEWEST) and not os.path.isdir(resume):
        recipe, resume = resume, NEWEST  # `frl train --resume r.yaml`: the flag took the recipe as its value
    if recipe is None:
        raise click.UsageError("Missing argument 'RECIPE'.")
    checked = preflight.load(recipe, list(overrides))  # every mistake fails here, once, before any process starts
    pm, rec = checked.pm, checked.recipe
    again = ["frl", "train", recipe, *(f"--set={o}" for o in overrides), *(["--no-progress"] if no_progress else []),
             *([f"--num-processes={num_processes}"] if num_processes > 1 else [])]
    if num_processes > 1 and not launched():
        check_batches(rec, num_processes)
        args = ["train", *again[2:], *([] if resume is None else ["--resume"] if resume == NEWEST else [f"--resume={resume}"])]
        code = relaunch(args, num_processes)
        if code:
            click.echo(f"error: training in {num_processes} processes failed (exit code {code}); "
                       "see the messages above", err=True)
        raise click.exceptions.Exit(code)
    run, summary = train_recipe(rec, pm=pm, progress=not no_progress, say=click.echo, command=again,
                                resume=False if resume is None else True if resume == NEWEST else resume,
                                data=checked.data)
    if launched() and int(os.environ.get("RANK", "0")) > 0:
        return  # rank 0 reports for all
    click.echo(format_summary(summary))
    click.echo(f"model: {run.dir / 'final'}")


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE")
def validate(recipe: str, overrides: tuple[str, ...]) -> None:
    """Check RECIPE and every stage's data without loading any model."""
    from feedback_rl.run import preflight
    rec = preflight.load(recipe, list(overrides)).recipe
    stages = " -> ".join(f"{s.name} ({s.optimizer.type})" for s in rec.stages)
    click.echo(f"{recipe}: ok: {stages}")


@cli.command()
@click.option("--dir", "root", default="runs", show_default=True, type=click.Path(file_okay=False))
def runs(root: str) -> None:
    """List runs: status (running, finished, interrupted, stopped, failed, killed), last step, best eval."""
    from pathlib import Path

    from feedback_rl.run.folder import list_runs
    rows = list_runs(Path(root))
    if not rows:
        click.echo(f"no runs in {root}")
        return
    head = ("name", "status", "stage", "step", "best_eval", "checkpoint")
    table = [head] + [tuple(str(r[k]) for k in head) for r in rows]
    widths = [max(len(r[c]) for r in table) for c in range(len(head))]
    for r in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


@cli.command()
def plugins() -> None:
    """Installed plugins, their versions, and what each registers."""
    from feedback_rl.plugins import default, plugin_versions
    pm, reg = default()
    versions = plugin_versions(pm)
    by_plugin: dict[str, list[str]] = {}
    for (kind, name), owner in sorted(reg.origin.items()):
        module = reg.classes[kind][name].__module__
        by_plugin.setdefault(module, []).append(f"{kind[:-1].replace('_', ' ')} '{name}'")
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda x: x[0]):
        module = getattr(plugin, "__name__", name)
        what = ", ".join(w for m, ws in by_plugin.items() if m == module or m.startswith(module + ".")
                         for w in ws) or "hooks only"
        click.echo(f"{name:<12} {versions.get(name, ''):<28} {what}")


# The core's commands that live in modules of their own: (module, click command). Plugins add theirs
# through the frl_register_commands hook.
COMMANDS: tuple[tuple[str, str], ...] = (("feedback_rl.commands.check", "check"), ("feedback_rl.commands.plots", "plot"),
                                         ("feedback_rl.commands.plan", "plan"), ("feedback_rl.commands.export", "export_command"))


def main(argv: list[str] | None = None) -> int:
    import importlib

    from feedback_rl.plugins import default
    try:
        for module, name in COMMANDS:
            cli.add_command(getattr(importlib.import_module(module), name))
        pm, _ = default()
        pm.hook.frl_register_commands(cli=cli)
        cli.main(args=argv, prog_name="frl", standalone_mode=False)
    except UserError as e:
        click.echo("error: " + str(e).replace("\n", "\\n"), err=True)
        return e.exit_code
    except RunStopped as e:
        click.echo(f"stopped: {e}", err=True)
        return e.exit_code
    except RunFailed as e:
        click.echo(f"error: {e}", err=True)
        return e.exit_code
    except click.exceptions.Abort as e:  # Ctrl-C; a second one during training says what it abandoned
        said = str(e.__cause__ or "")
        click.echo(f"aborted: {said}" if said else "aborted", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
