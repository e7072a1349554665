"""The rule source's checks before any model loads (``RuleSource.preflight``), and custom functions found
next to the recipe."""
from __future__ import annotations

import json
import textwrap

import pytest

from feedback_rl import PluginContext, Rollout, UserError
from feedback_rl.data import Dataset
from feedback_rl.rows.dataset import load
from frl_plugins.rewards.rule import RuleSource


def ctx(folder, name="correct"):
    return PluginContext(name=name, run_dir=folder, recipe_dir=folder)


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load(str(path), path.parent)


def test_rows_lacking_the_answer_key_are_counted_with_the_first_line(tmp_path):
    rows = [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(50)]
    rows[17] = {"prompt": "17+1="}
    rows[40] = {"prompt": "40+1=", "answer": None}
    data = write_rows(tmp_path / "train.jsonl", rows)
    with pytest.raises(UserError) as info:
        RuleSource.preflight(RuleSource.Options(check="exact"), ctx(tmp_path), data)
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 'train.jsonl'}:18: 2 of 50 rows have no 'answer'") and "'correct'" in msg
    assert "\n" not in msg


def test_the_answer_key_is_the_configured_one_and_blank_lines_keep_line_numbers(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"prompt": "a", "answer": "1"}\n\n{"prompt": "b", "answer": "2"}\n')
    data = load(str(path), path.parent)
    with pytest.raises(UserError, match=r"t.jsonl:1: 2 of 2 rows have no 'gold'"):
        RuleSource.preflight(RuleSource.Options(check="math", answer_key="gold"), ctx(tmp_path), data)
    RuleSource.preflight(RuleSource.Options(check="numeric"), ctx(tmp_path), data)  # all present: no error


def test_checks_that_read_no_answer_and_a_stage_without_rows_pass(tmp_path):
    data = Dataset([{"prompt": "x"}], "gen")
    RuleSource.preflight(RuleSource.Options(check="regex", pattern="x"), ctx(tmp_path), data)
    RuleSource.preflight(RuleSource.Options(check="exact"), ctx(tmp_path), None)


def test_a_custom_function_that_cannot_be_imported_fails_in_preflight(tmp_path):
    (tmp_path / "broken_checks_pf.py").write_text("import no_such_dependency_xyz\n")
    for spec, words in [("broken_checks_pf:score", "ModuleNotFoundError: No module named 'no_such_dependency_xyz'"),
                        ("missing_module_pf:score", "No module named 'missing_module_pf'")]:
        with pytest.raises(UserError) as info:
            RuleSource.preflight(RuleSource.Options(check="custom", function=spec), ctx(tmp_path), None)
        assert f"cannot import custom check '{spec}' (looked in {tmp_path.resolve()}" in str(info.value)
        assert words in str(info.value)


def test_a_custom_function_next_to_the_recipe_imports_and_scores(tmp_path):
    (tmp_path / "beside_recipe_checks.py").write_text(textwrap.dedent("""\
        def ends_with_answer(completion, row):
            return completion.endswith(row["answer"])
        """))
    opts = RuleSource.Options(check="custom", function="beside_recipe_checks:ends_with_answer")
    RuleSource.preflight(opts, ctx(tmp_path), None)
    src = RuleSource(opts, ctx(tmp_path))
    row = {"prompt": "2+2=", "answer": "4"}
    scores = src.score([Rollout(prompt="2+2=", completion=c, row=row, group=0, prompt_ids=[], completion_ids=[])
                        for c in ("it is 4", "it is 5")])
    assert [s.value for s in scores] == [1.0, 0.0]


def test_every_reward_source_has_a_preflight_that_does_nothing_by_default(tmp_path):
    from feedback_rl import RewardSource
    assert RewardSource.preflight(None, ctx(tmp_path), None) is None
