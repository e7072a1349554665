"""The data-source plugin kind: the hook, the registry, recipe validation and the dispatch in data.load."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import Field

import feedback_rl
from feedback_rl import PluginOptions, UserError
from feedback_rl.data import DataSource, SourcedData
from feedback_rl.config import recipe as recipes
from feedback_rl.rows.dataset import load
from feedback_rl.plugins import build_registry, get_plugin_manager


class Squares(DataSource):
    """``{squares: N, offset: K}``: prompts "i*i=" for i in offset..offset+N-1."""

    name = "squares"

    class Options(PluginOptions):
        squares: int = Field(ge=1)
        offset: int = 0

    def rows(self):
        return [{"prompt": f"{i}*{i}=", "answer": str(i * i)} for i in range(self.options.offset,
                                                                              self.options.offset + self.options.squares)]


class Nameless(DataSource):
    name = "nameless"  # its Options has no field 'nameless'


class Plugin:
    @feedback_rl.hookimpl
    def frl_register_datasets(self, register):
        register(Squares)


@pytest.fixture(scope="module")
def registry():
    pm = get_plugin_manager()
    pm.register(Plugin())
    pm.check_pending()
    return build_registry(pm)


RECIPE = """\
name: d
stages:
  - name: grpo
    optimizer: grpo
    data:
      train: {squares: 20}
      eval: {squares: 10, offset: 15}
    rewards: {sources: [{name: c, type: rule, check: exact}]}
"""


def validate(tmp_path, registry, text=RECIPE, overrides=()):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return recipes.load(path, list(overrides), registry)


def test_a_recipe_names_a_data_source_by_its_key_and_load_dispatches_to_it(tmp_path, registry):
    rec = validate(tmp_path, registry)
    train_ref = rec.stages[0].data.train
    assert isinstance(train_ref, SourcedData) and rec.options("data", 0, "train").squares == 20
    train = load(train_ref, rec.base_dir, registry)
    assert len(train) == 20 and train[3] == {"prompt": "3*3=", "answer": "9"} and train.origin == "squares '20'"


def test_eval_rows_whose_prompt_is_in_train_are_dropped(tmp_path, registry):
    rec = validate(tmp_path, registry)
    ev = load(rec.stages[0].data.eval, rec.base_dir, registry)
    assert [r["prompt"] for r in ev] == [f"{i}*{i}=" for i in range(20, 25)]
    assert "5 rows also in data.train dropped" in ev.origin


def test_an_eval_entirely_inside_train_is_a_user_error(tmp_path, registry):
    rec = validate(tmp_path, registry, overrides=["stages.0.data.eval.offset=2"])
    with pytest.raises(UserError, match="every eval row is also in data.train"):
        load(rec.stages[0].data.eval, rec.base_dir, registry)


@pytest.mark.parametrize("override,message", [
    # a mistake a --set made is named by the --set, not by the recipe line it replaced
    ("stages.0.data.eval={squares: 20}", "--set stages.0.data.eval={squares: 20}: stages[0].data.eval: the same "
                                         "rows as data.train"),
    ("stages.0.data.train={squars: 3}", "--set stages.0.data.train={squars: 3}: stages[0].data.train: no data "
                                        "source named by the keys squars "
                                        "(did you mean 'squares'?)"),
    ("stages.0.data.train={generater: addition}", "(did you mean 'generator'?)"),
    ("stages.0.data.train={squares: 3, ofset: 1}", "stages[0].data.train.ofset: unknown key for squares "
                                                   "(did you mean 'offset'?); expected one of: squares, offset"),
    ("stages.0.data.train={squares: 0}", "stages[0].data.train.squares: expected greater than or equal to 1"),
    ("stages.0.data.train={generator: addition, sise: 3}", "stages[0].data.train.sise: unknown key (did you mean "
                                                          "'size'?)"),
    ("stages.0.data.train={}", "stages[0].data.train: expected"),
])
def test_bad_data_source_mappings_are_one_line_errors(tmp_path, registry, override, message):
    with pytest.raises(UserError) as info:
        validate(tmp_path, registry, overrides=[override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_two_sources_in_one_mapping_are_refused(tmp_path, registry):
    other = type("Cubes", (Squares,), {"name": "cubes", "Options": type("O", (PluginOptions,), {
        "__annotations__": {"cubes": int}})})
    registry.classes["datasets"]["cubes"] = other
    try:
        with pytest.raises(UserError, match="names 2 data sources"):
            validate(tmp_path, registry, overrides=["stages.0.data.train={squares: 1, cubes: 1}"])
    finally:
        del registry.classes["datasets"]["cubes"]


def test_a_data_source_whose_options_lack_its_name_cannot_register():
    class Bad:
        @feedback_rl.hookimpl
        def frl_register_datasets(self, register):
            register(Nameless)

    pm = get_plugin_manager(load_entry_points=False)
    pm.register(Bad())
    with pytest.raises(UserError, match="data source 'nameless'.*needs a field named 'nameless'"):
        build_registry(pm)


def test_the_core_forms_keep_their_own_errors():
    from feedback_rl.rows.refs import DATA_KINDS
    assert set(DATA_KINDS) >= {"generator"}
    with pytest.raises(ValueError, match="not a data source's"):
        SourcedData.model_validate({"generator": "addition", "sise": 1})
