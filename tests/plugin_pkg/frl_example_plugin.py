"""An outside plugin: a reward source, a CLI command and a lifecycle hook, through the public API only."""
from pathlib import Path

import click
from pydantic import Field

import feedback_rl
from feedback_rl import PluginOptions, RewardSource, Score


class ShortAnswer(RewardSource):
    """1.0 when the completion has at most ``max_chars`` characters, else 0.0; abstains on empty ones."""

    name = "short_answer"

    class Options(PluginOptions):
        max_chars: int = Field(3, ge=1)

    def score(self, rollouts):
        return [Score.abstain("empty") if not r.completion else
                Score.ok(1.0 if len(r.completion) <= self.options.max_chars else 0.0) for r in rollouts]


@feedback_rl.hookimpl
def frl_register_reward_sources(register):
    register(ShortAnswer)


@feedback_rl.hookimpl
def frl_register_commands(cli):
    @cli.command(name="example-hello")
    def hello():
        """Say hello from the example plugin."""
        click.echo("hello from frl-example-plugin")


@feedback_rl.hookimpl
def frl_run_end(run, summary):
    # leaves a mark so the test can see the hook ran in the trainer's process
    Path(run.dir, "example_plugin_saw_end.txt").write_text(summary["status"])
