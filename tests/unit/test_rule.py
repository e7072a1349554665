"""Unit tests of the built-in `rule` reward source (plugins/rewards/rule.py)."""
from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [p for p in (str(ROOT), str(Path(__file__).parent)) if p not in sys.path]

from feedback_rl import PluginContext, Rollout, Score, UserError


def _load_rule():
    """The module from the working tree, by path, whether or not frl_plugins is installed."""
    spec = importlib.util.spec_from_file_location("_frl_rule_under_test", ROOT / "plugins/rewards/rule.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the Options' annotations through sys.modules
    spec.loader.exec_module(module)
    return module


rule = _load_rule()
RuleSource = rule.RuleSource


def make(tmp_path=Path("."), **opts):
    return RuleSource(options=RuleSource.Options(**opts), context=PluginContext(name="correct", run_dir=tmp_path))


def rollout(completion, **row):
    row = row or {"prompt": "12+34=", "answer": "46", "task": "math"}
    return Rollout(prompt=row.get("prompt", ""), completion=completion, row=row, group=0,
                   prompt_ids=[], completion_ids=[])


def values(source, completions, **row):
    scores = source.score([rollout(c, **row) for c in completions])
    assert all(s.is_ok for s in scores), scores
    return [s.value for s in scores]


def test_exact_normalises_whitespace_and_case():
    src = make(check="exact")
    assert values(src, ["46", "  46\n", "4 6", "46 "]) == [1.0, 1.0, 0.0, 1.0]
    row = {"answer": "New   York"}
    assert values(src, ["new york", "New York\n"], **row) == [0.0, 1.0]
    assert values(make(check="exact", case_sensitive=False), ["NEW\tyork"], **row) == [1.0]


def test_rewards_are_configurable():
    src = make(check="exact", reward_correct=2.0, reward_wrong=-1.0)
    assert values(src, ["46", "47"]) == [2.0, -1.0]


@pytest.mark.parametrize("text,expected", [
    ("1,234", 1234.0), ("-3.5", -3.5), ("1e3", 1000.0), ("3/4", 0.75), ("-3/4", -0.75),
    ("\\frac{1}{2}", 0.5), ("-\\dfrac{3}{4}", -0.75), (".5", 0.5), (7, 7.0),
    ("1,23", None), ("abc", None), ("3/0", None), ("nan", None), ("1e999", None), (True, None),
])
def test_parse_number(text, expected):
    assert rule.parse_number(text) == expected


def test_numeric_tolerance_and_thousands():
    src = make(check="numeric")
    assert values(src, ["1,234", "1234.0000000001", "1234.01", "1234 apples"], answer="1234") == [1, 1, 0, 0]
    assert values(make(check="numeric", tolerance=0.1), ["1234.05"], answer="1234") == [1.0]
    rel = make(check="numeric", relative_tolerance=0.01)
    assert values(rel, ["1000000", "1009000", "1011000"], answer="1e6") == [1.0, 1.0, 0.0]
    assert values(src, ["0.75"], answer="3/4") == [1.0]
    assert values(src, ["46"], answer=46) == [1.0]  # a gold number need not be a string


def test_numeric_bad_gold_is_error_but_bad_completion_is_wrong():
    src = make(check="numeric")
    bad_gold = src.score([rollout("46", answer="forty-six")])[0]
    assert bad_gold.status == "error" and "not a number" in bad_gold.reason
    assert values(src, ["forty-six", ""]) == [0.0, 0.0]


@pytest.mark.parametrize("check,extra", [("exact", {}), ("numeric", {}), ("final_answer", {"compare": "numeric"})])
def test_missing_answer_key_is_error_naming_it(check, extra):
    src = make(check=check, answer_key="solution", **extra)
    score = src.score([rollout("#### 46")])[0]
    assert score.status == "error" and "'solution'" in score.reason


@pytest.mark.parametrize("check,gold", [("exact", ""), ("exact", "  \n"), ("final_answer", "All done.\n#### "),
                                        ("numeric", "")])
def test_a_blank_gold_is_an_error_and_an_empty_reply_never_matches_it(check, gold):
    src = make(check=check)
    scores = src.score([rollout(reply, prompt="1+1=", answer=gold) for reply in ("", "#### ", "2")])
    assert all(s.status == "error" and "blank" in s.reason for s in scores), scores


def test_regex_fullmatch_vs_search():
    full = make(check="regex", pattern=r"\d+")
    search = make(check="regex", pattern=r"\d+", mode="search")
    completions = ["46", "the answer is 46", "no digits"]
    assert values(full, completions) == [1.0, 0.0, 0.0]
    assert values(search, completions) == [1.0, 1.0, 0.0]
    assert values(make(check="regex", pattern="yes", case_sensitive=False), ["YES"]) == [1.0]
    assert values(full, ["46"], prompt="p") == [1.0]  # regex needs no gold answer


def test_bad_options_are_validation_errors():
    with pytest.raises(ValidationError, match="invalid regular expression"):
        RuleSource.Options(check="regex", pattern="(unclosed")
    with pytest.raises(ValidationError, match="needs option 'pattern'"):
        RuleSource.Options(check="regex")
    with pytest.raises(ValidationError, match="'tolerance' does not apply to check 'exact'"):
        RuleSource.Options(check="exact", tolerance=0.1)
    with pytest.raises(ValidationError, match="with compare 'exact'"):
        RuleSource.Options(check="final_answer", tolerance=0.1)
    with pytest.raises(ValidationError):
        RuleSource.Options(check="fuzzy")
    with pytest.raises(ValidationError):
        RuleSource.Options(check="exact", answr_key="x")  # unknown keys are errors
    with pytest.raises(ValidationError):
        RuleSource.Options(check="custom", function="no_colon")


def test_final_answer_hash_marker():
    src = make(check="final_answer", compare="numeric")
    completions = ["12+34 is 46.\n#### 46", "#### 40 wait\n#### 46\nQuestion: next", "46", "#### 47"]
    assert values(src, completions) == [1.0, 1.0, 0.0, 0.0]  # no marker is a format failure: wrong
    gsm8k_gold = "Natalia sold 48/2 = 24 clips.\n#### 1,234"
    assert values(src, ["#### 1234"], answer=gsm8k_gold) == [1.0]  # the gold's own marker is honoured


def test_final_answer_nested_boxed():
    src = make(check="final_answer", marker="boxed")
    done = "So \\boxed{3} was a slip; the answer is $\\boxed{\\frac{1}{2}}$."
    truncated = "The answer is \\boxed{\\frac{1}{2}"
    assert values(src, [done, truncated, "1/2"], answer="\\frac{1}{2}") == [1.0, 0.0, 0.0]
    assert rule.extract_final("\\boxed{a{b}c} \\boxed{x", "boxed") == "a{b}c"
    numeric = make(check="final_answer", marker="boxed", compare="numeric")
    assert values(numeric, [done], answer="0.5") == [1.0]


def test_custom_function_values():
    assert values(make(check="custom", function="rule_checks:always_true"), ["x"]) == [1.0]
    assert values(make(check="custom", function="rule_checks:partial"), ["x"]) == [0.3]
    assert values(make(check="custom", function="rule_checks:contains_answer"), ["46!", "no"]) == [1.0, 0.0]
    score = make(check="custom", function="rule_checks:abstain").score([rollout("x")])[0]
    assert score.status == "abstain"


def test_custom_function_errors_are_never_zero():
    boom = make(check="custom", function="rule_checks:boom").score([rollout("x")])[0]
    assert boom == Score.error(boom.reason) and "ValueError: checker exploded" in boom.reason
    wrong = make(check="custom", function="rule_checks:wrong_type").score([rollout("x")])[0]
    assert wrong.status == "error" and "returned str" in wrong.reason


def test_custom_function_timeout():
    src = make(check="custom", function="rule_checks:sleepy", timeout=0.2)
    start = time.monotonic()
    score = src.score([rollout("x")])[0]
    assert time.monotonic() - start < 0.9
    assert score.status == "error" and "timed out after 0.2s" in score.reason


@pytest.mark.parametrize("function,message", [
    ("no_such_module_xyz:fn", "cannot import custom check 'no_such_module_xyz:fn'"),
    ("rule_checks:missing", "cannot import custom check 'rule_checks:missing'"),
    ("rule_checks:NOT_A_FUNCTION", "is not callable"),
])
def test_custom_bad_function_is_user_error(function, message):
    with pytest.raises(UserError, match=message) as info:
        make(check="custom", function=function)
    assert "\n" not in str(info.value) and "'correct'" in str(info.value)


def test_hookimpl_registers_the_class():
    registered = []
    rule.frl_register_reward_sources(register=registered.append)
    assert registered == [RuleSource] and RuleSource.name == "rule"
    assert make(check="numeric", tolerance=0.5).describe() == {"check": "numeric", "tolerance": 0.5}
