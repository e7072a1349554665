"""``frl check RECIPE``: run every reward source of every stage on a few generated rollouts.

Finds a broken judge prompt, a wrong URL or a missing key in seconds instead of after hours of
compute. Rollouts come from the recipe's starting model through the core generation path (a stage with an
environment plays episodes against it, as training does, and the first episode's turns are shown with their
roles); the sources are mixed by the core mixer (so gates and routing apply as in training). Prints a table
per source and, for a source with ``explain()`` (the judge), the exact prompt it sent and the reply
it parsed. Exits 1 when any source errored or could not start.
"""
from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

import click

from feedback_rl.base import PluginContext
from feedback_rl.modeling.chat import check_rows, render_prompt
from feedback_rl.errors import RunStopped, UserError
from feedback_rl.loop.episodes import play_episodes
from feedback_rl.loop.rewards import Mixer, Slot, build_mixer
from feedback_rl.loop.rollout import generate_rollouts, sampling_params


@click.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe key.")
@click.option("--prompts", "num_prompts", default=2, show_default=True, help="Prompts per stage.")
@click.option("--generations", default=2, show_default=True, help="Rollouts per prompt.")
@click.option("--show", default=2, show_default=True, help="Judge prompts and replies shown per source.")
def check(recipe: str, overrides: tuple[str, ...], num_prompts: int, generations: int, show: int) -> None:
    """Run every reward source of RECIPE on a few rollouts; exit 1 if any fails."""
    from feedback_rl.run import preflight
    checked = preflight.load(recipe, list(overrides))
    failed = run_check(checked.recipe, checked.registry, num_prompts, generations, show, click.echo, checked.data)
    if failed:  # RunStopped: the CLI prints it and exits 1
        raise RunStopped(f"check failed: {', '.join(failed)}")
    click.echo("check: ok")


def run_check(rec: Any, reg: Any, num_prompts: int, generations: int, show: int, echo: Any,
              data: list | None = None) -> list[str]:
    """Checks every stage; returns the names (``stage/source``) of the sources that failed."""
    from feedback_rl.rows import dataset as datasets
    from feedback_rl.modeling.loading import context_length, load_policy
    from feedback_rl.run.preflight import check as preflight
    data = data if data is not None else preflight(rec, reg)
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="frl-check-") as tmp:
        run_dir = Path(tmp)
        policy, tokenizer = load_policy(rec.model, rec.base_dir, run_dir / "base_model", rec.seed)
        for i, stage in enumerate(rec.stages):
            groups = [("source", stage.rewards.sources)]
            if stage.eval.sources is not None:
                groups.append(("eval_source", stage.eval.sources))
            if not any(specs for _, specs in groups):
                continue
            rows = data[i].train if data[i].train is not None else data[i].eval
            if rows is None:
                echo(f"stage '{stage.name}': no data to generate rollouts from; skipped")
                continue
            rows = datasets.Dataset(list(rows)[:num_prompts], rows.origin, rows.lines[:num_prompts], rows.unit)
            system = stage.rollout.system_prompt
            check_rows(rows, tokenizer, context_length(policy.config), stage.rollout.max_new_tokens, system)
            ctx = PluginContext(name="check", run_dir=run_dir, stage=stage.name, seed=rec.seed,
                                recipe_dir=rec.base_dir)
            backend = reg.get("backends", stage.rollout.backend)(rec.options("backend", i), ctx)
            if stage.environment is None:
                rollouts = generate_rollouts(backend, policy, tokenizer, rows, sampling_params(stage.rollout),
                                             generations, system_prompt=system)
            else:
                env = reg.get("environments", stage.environment.type)(rec.options("environment", i), ctx)
                try:
                    rollouts, _ = play_episodes(backend, policy, tokenizer, env, rows, sampling_params(stage.rollout),
                                                generations, env.options.max_turns,
                                                context_length(policy.config) or 2048, seed=rec.seed,
                                                system_prompt=system)
                finally:
                    env.close()
            echo(f"== stage '{stage.name}': {len(rollouts)} {'rollouts' if stage.environment is None else 'episodes'} "
                 f"of {len(rows)} prompts (from the recipe's starting model)")
            if rollouts and rollouts[0].episode is not None:
                _show_episode(rollouts[0], echo)
            elif "prompt" in rows[0]:  # one rendering everywhere: this is the text the policy is prompted with
                shown = render_prompt(tokenizer, rows[0]["prompt"], system, rows[0].get("tools"))
                echo(f"prompt as the policy sees it: {shown!r}")
            for key, specs in groups:
                if not specs:
                    continue
                failed += [f"{stage.name}/{n}" for n in _check_sources(rec, reg, i, key, specs, rollouts, run_dir,
                                                                       show, echo, tokenizer)]
            backend.close()
    return failed


def _show_episode(rollout: Any, echo: Any) -> None:
    """The first episode as the policy played it: its prompt, then each turn with its role (quoted literals: model
    text may hold control characters), and how it ended."""
    ep = rollout.episode
    echo(f"episode of the first prompt, as the policy sees its opening: {rollout.prompt!r}")
    for turn in rollout.turns:
        echo(f"  [{turn.get('role')}] {turn.get('content', '')!r}")
    echo(f"  ended: {ep.get('end') or ('done' if ep.get('done') else 'truncated')}; step rewards {ep.get('rewards')}"
         + (f"; error: {ep['error']}" if ep.get("error") else ""))
    if ep.get("bridge_fallback"):   # worth knowing before a run: each segment re-renders the conversation so far
        echo(f"  split into {ep.get('segments', 1)} sequences: the chat template renders earlier turns differently "
             "once later ones follow, so each later turn is prompted by the conversation rendered again "
             "(counted in env/bridge_fallbacks; every segment trains)")


def _check_sources(rec: Any, reg: Any, i: int, key: str, specs: list, rollouts: list, run_dir: Path,
                   show: int, echo: Any, tokenizer: Any = None) -> list[str]:
    failed = []

    def cannot_start(spec: Any, e: UserError) -> None:
        echo(f"{spec.name:<16} {spec.type:<10} cannot start: {e}")
        failed.append(spec.name)

    mixer = build_mixer(rec, reg, i, key, specs, lambda name: PluginContext(
        name=name, run_dir=run_dir, stage=rec.stages[i].name, seed=rec.seed, recipe_dir=rec.base_dir,
        tokenizer=tokenizer),
        on_error=cannot_start)
    slots = mixer.slots
    try:
        scored, metrics = mixer.score(rollouts, prefix="check")
        echo(f"{'source':<16} {'type':<10} {'n':>3} {'ok':>3} {'abstain':>7} {'error':>5} {'mean':>8} "
             f"{'latency_s':>9}  scores")
        for slot in slots:
            name = slot.spec.name
            verdict = _check_pairwise(slot, rollouts, echo) if slot.source.pairwise else \
                _check_pointwise(slot, scored, metrics, echo)
            if verdict:
                echo(f"{'':<16} error: {verdict}")
                failed.append(name)
            explain = getattr(slot.source, "explain", None)
            if callable(explain) and show:
                for item in explain(show):
                    _show_judgment(item, echo)
    finally:
        mixer.close()
    return failed


def _check_pointwise(slot: Slot, scored: list, metrics: dict, echo: Any) -> str | None:
    """The source's row of the table; what makes it fail, if anything."""
    name = slot.spec.name
    scores = [s.scores[name] for s in scored]
    values = [sc.value for sc in scores if sc.is_ok]
    errors = [sc for sc in scores if sc.status == "error"]
    mean = f"{statistics.fmean(values):.3f}" if values else "-"
    shown = " ".join(f"{sc.value:g}" if sc.is_ok else sc.status for sc in scores)
    echo(f"{name:<16} {slot.spec.type:<10} {len(scores):>3} {len(values):>3} "
         f"{sum(sc.status == 'abstain' for sc in scores):>7} {len(errors):>5} {mean:>8} "
         f"{metrics.get(f'check/{name}/latency_s', 0.0):>9.3f}  {shown}")
    asked = int(metrics.get(f"check/{name}/asked", 0))
    if errors:
        return errors[0].reason.removeprefix("UserError: ")
    if asked and not values:  # a source that abstains on everything gives no signal: not ok
        reason = next((sc.reason for sc in scores if sc.status == "abstain" and sc.reason), "no reason given")
        return f"abstained on all {asked} rollouts it was asked about (first: {reason})"
    if not asked:
        echo(f"{'':<16} note: asked about no rollout (every one gated out or routed away); not checked")
    return None


def _check_pairwise(slot: Slot, rollouts: list, echo: Any) -> str | None:
    prefs, metrics = Mixer([slot]).compare(rollouts, prefix="check")  # the pairs and counts a run would see
    name = slot.spec.name
    asked, errors = int(metrics.get(f"check/{name}/asked", 0)), int(metrics.get(f"check/{name}/errors", 0))
    echo(f"{name:<16} {slot.spec.type:<10} pairwise: {len(prefs)} of {asked} pairs judged, {errors} failed, "
         f"winners {[p.winner for p in prefs]}")
    if errors:
        return slot.last_errors[0]
    if asked and not prefs:
        return "no pair got a verdict (every judgment was unparseable)"
    return None


def _show_judgment(item: dict, echo: Any) -> None:
    echo("  ---- prompt sent:")
    for m in item.get("messages", []):
        echo(f"  [{m['role']}] " + m["content"].replace("\n", "\n  "))
    if "failure" in item:
        echo(f"  ---- call failed: {item['failure']}")
    else:
        cached = " (cached)" if item.get("cached") else ""
        echo(f"  ---- reply{cached}: {item.get('reply', '')!r}")
        echo(f"  ---- parsed: {item.get('parsed')!r} ({item.get('status')}"
             + (f": {item['reason']}" if item.get("reason") else "") + ")")
