"""Every hook is called by a real run, with the arguments its spec documents; every hook is documented."""
import inspect
import re
import textwrap
from pathlib import Path

import pytest

import feedback_rl
from feedback_rl import hookspecs
from feedback_rl.commands.train import train_recipe
from feedback_rl.plugins import get_plugin_manager

HOOKS = sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("frl_"))
DOCS = Path(__file__).parents[2] / "docs" / "plugins.md"


class Recorder:
    def __init__(self):
        self.calls = []

    @feedback_rl.hookimpl
    def frl_register_reward_sources(self, register):
        self.calls.append(("frl_register_reward_sources", {}))

    @feedback_rl.hookimpl
    def frl_register_optimizers(self, register):
        self.calls.append(("frl_register_optimizers", {}))

    @feedback_rl.hookimpl
    def frl_register_backends(self, register):
        self.calls.append(("frl_register_backends", {}))

    @feedback_rl.hookimpl
    def frl_register_loggers(self, register):
        self.calls.append(("frl_register_loggers", {}))

    @feedback_rl.hookimpl
    def frl_register_datasets(self, register):
        self.calls.append(("frl_register_datasets", {}))

    @feedback_rl.hookimpl
    def frl_register_environments(self, register):
        self.calls.append(("frl_register_environments", {}))

    @feedback_rl.hookimpl
    def frl_register_commands(self, cli):
        self.calls.append(("frl_register_commands", {"cli": cli}))

    @feedback_rl.hookimpl
    def frl_run_start(self, run, recipe):
        self.calls.append(("frl_run_start", {"run": run, "recipe": recipe}))

    @feedback_rl.hookimpl
    def frl_rollouts_generated(self, stage, step, rollouts):
        self.calls.append(("frl_rollouts_generated", {"stage": stage, "step": step, "rollouts": rollouts}))

    @feedback_rl.hookimpl
    def frl_scores_mixed(self, stage, step, scored):
        self.calls.append(("frl_scores_mixed", {"stage": stage, "step": step, "scored": scored}))

    @feedback_rl.hookimpl
    def frl_step_end(self, stage, step, metrics):
        self.calls.append(("frl_step_end", {"stage": stage, "step": step, "metrics": metrics}))

    @feedback_rl.hookimpl
    def frl_checkpoint_saved(self, stage, step, path):
        self.calls.append(("frl_checkpoint_saved", {"stage": stage, "step": step, "path": path}))

    @feedback_rl.hookimpl
    def frl_run_end(self, run, summary):
        self.calls.append(("frl_run_end", {"run": run, "summary": summary}))

    def named(self, hook):
        return [kw for name, kw in self.calls if name == hook]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hooks")
    recipe = tmp / "r.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        name: hooks
        output_dir: {tmp / 'runs'}
        stages:
          - name: grpo
            optimizer: grpo
            data: {{train: {{generator: addition}}}}
            rewards: {{sources: [{{name: exact, type: rule, check: exact}}]}}
            rollout: {{num_generations: 2, max_new_tokens: 3}}
            train: {{steps: 2, batch_size: 2}}
        """))
    pm = get_plugin_manager()
    rec = Recorder()
    pm.register(rec)
    pm.check_pending()
    from feedback_rl.commands.cli import cli
    pm.hook.frl_register_commands(cli=cli)
    run, summary = train_recipe(recipe, pm=pm)
    return rec, run


def test_hook_names_are_prefixed_and_the_recorder_implements_every_one():
    assert HOOKS and all(h.startswith("frl_") for h in HOOKS)
    assert sorted(n for n in dir(Recorder) if n.startswith("frl_")) == HOOKS


def test_every_hook_is_called_by_a_real_run(recorded):
    rec, _ = recorded
    assert sorted({name for name, _ in rec.calls}) == HOOKS


def test_lifecycle_hooks_get_their_documented_arguments(recorded):
    rec, run = recorded
    assert rec.named("frl_run_start")[0]["run"].dir == run.dir
    gen = rec.named("frl_rollouts_generated")
    assert [g["step"] for g in gen] == [1, 2] and len(gen[0]["rollouts"]) == 4
    mixed = rec.named("frl_scores_mixed")[0]["scored"]
    assert all("exact" in s.scores for s in mixed)
    ends = rec.named("frl_step_end")
    assert [e["step"] for e in ends] == [1, 2] and "loss" in ends[0]["metrics"]
    assert rec.named("frl_checkpoint_saved")[0]["path"].joinpath("config.json").exists()
    assert rec.named("frl_run_end")[0]["summary"]["status"] == "finished"


def test_every_hook_is_documented_in_the_plugin_guide():
    text = DOCS.read_text()
    missing = [h for h in HOOKS if not re.search(rf"`{h}\(", text)]
    assert not missing, f"hooks missing from docs/plugins.md: {missing}"


def test_every_hookspec_has_a_docstring_and_typed_arguments():
    for name in HOOKS:
        fn = getattr(hookspecs, name)
        assert fn.__doc__ and fn.__doc__.strip(), name
        params = inspect.signature(fn).parameters.values()
        assert all(p.annotation is not inspect.Parameter.empty for p in params), name
