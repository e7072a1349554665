"""docs/episodes.md's "OpenEnv environments" stays true without OpenEnv installed: its options table lists exactly
the `openenv` environment's options with their defaults, and every key its recipe blocks use is one of them.
(tests/openenv_tier/test_docs.py plays the blocks against OpenEnv itself.)"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from feedback_rl.environments import EnvironmentOptions

from frl_plugins.environments.openenv.plugin import OpenEnvBridge

DOC = Path(__file__).resolve().parents[2] / "docs" / "episodes.md"


def section() -> str:
    return re.search(r"### OpenEnv environments\n(.*?)\n## ", DOC.read_text(), re.S).group(1)


def test_the_options_table_lists_every_option_with_its_default():
    rows = [(n, d.strip()) for n, d in re.findall(r"^\| `(\w+)` \|(.*?)\|", section(), re.M)]
    fields = OpenEnvBridge.Options.model_fields
    every = list(EnvironmentOptions.model_fields)   # the options every environment has, listed last
    assert [name for name, _ in rows] == [n for n in fields if n not in every] + every
    for name, default in rows:
        f = fields[name]
        value = f.get_default(call_default_factory=True)
        shown = "" if value is None else "`" + yaml.safe_dump(value, default_flow_style=True).strip().removesuffix(
            "\n...").removesuffix(" ...") + "`"
        assert default == shown, f"{name}: the table says {default!r}, the option's default is {value!r}"


def test_the_recipe_blocks_use_only_the_environments_options():
    blocks = re.findall(r"```yaml\n(.*?)```", section(), re.S)
    assert len(blocks) == 2
    for block in blocks:
        environment = yaml.safe_load(block)["environment"]
        assert environment.pop("type") == "openenv"
        assert set(environment) <= set(OpenEnvBridge.Options.model_fields), environment
