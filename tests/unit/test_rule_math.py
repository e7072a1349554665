"""`check: math` of the rule source, on the real math-verify: each answer kind, errors, and its timeout."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
import textwrap

import pytest
from pydantic import ValidationError

from feedback_rl import PluginContext, Rollout
from frl_plugins.rewards.rule import RuleSource

# (completion, gold): evaluating this binomial coefficient takes sympy seconds (5 s measured here), each time
SLOW = ("\\binom{300000}{150001}", "$\\binom{300000}{150000}$")


def make(**opts):
    return RuleSource(RuleSource.Options(check="math", **opts), PluginContext(name="math", run_dir="."))


def score(source, completion, gold):
    row = {"prompt": "q", "answer": gold}
    return source.score([Rollout(prompt="q", completion=completion, row=row, group=0, prompt_ids=[],
                                 completion_ids=[])])[0]


def values(source, pairs):
    out = [score(source, c, g) for c, g in pairs]
    assert all(s.is_ok for s in out), out
    return [s.value for s in out]


def test_latex_and_boxed_answers():
    src = make()
    assert values(src, [
        ("The answer is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("So x equals \\boxed{5}.", "5"),
        ("$\\sqrt{2}/2$", "\\frac{1}{\\sqrt{2}}"),
        ("The answer is $\\boxed{\\frac{1}{3}}$.", "\\frac{1}{2}"),  # wrong: 0.0
    ]) == [1.0, 1.0, 1.0, 0.0]


def test_fractions_and_decimals_are_one_number():
    assert values(make(), [("so 0.5", "1/2"), ("I get \\boxed{\\dfrac12}", "0.5"), ("0.75", "\\frac{3}{4}"),
                           ("1/3", "0.5")]) == [1.0, 1.0, 1.0, 0.0]


def test_percentages():
    assert values(make(), [("The answer is 50%", "50%"), ("$50\\%$", "50%"), ("half: 0.5", "50%"),
                           ("40%", "50%")]) == [1.0, 1.0, 1.0, 0.0]


def test_sets_and_intervals_ignore_order_and_need_every_element():
    assert values(make(), [("the set is $\\{3, 1, 2\\}$", "\\{1,2,3\\}"), ("$\\{1,3\\}$", "\\{1,2\\}"),
                           ("$[1,2)$", "[1,2)"), ("$(1,2]$", "[1,2)")]) == [1.0, 0.0, 1.0, 0.0]


def test_equivalent_expressions():
    assert values(make(), [("$2(x+1)$", "2x+2"), ("$(x-1)(x+1)$", "x^2-1"), ("$2(x+2)$", "2x+2")]) == [1.0, 1.0, 0.0]


def test_rewards_are_configurable():
    assert values(make(reward_correct=2.0, reward_wrong=-1.0), [("5", "5"), ("6", "5")]) == [2.0, -1.0]


def test_no_answer_is_an_error_unless_set_to_wrong():
    s = score(make(), "I do not know", "x^2")
    assert s.status == "error" and "no answer" in s.reason
    assert values(make(no_answer="wrong"), [("I do not know", "x^2")]) == [0.0]


def test_an_unparseable_gold_answer_is_an_error_naming_it():
    s = score(make(), "5", "\\boxed{")
    assert s.status == "error" and "gold answer '\\\\boxed{' does not parse" in s.reason
    missing = make().score([Rollout(prompt="q", completion="5", row={"prompt": "q"}, group=0, prompt_ids=[],
                                    completion_ids=[])])[0]
    assert missing.status == "error" and "'answer'" in missing.reason


def test_timeout_on_the_main_thread_uses_math_verifys_signal():
    assert threading.current_thread() is threading.main_thread()
    start = time.monotonic()
    s = score(make(timeout=1), SLOW[1], SLOW[0])
    assert time.monotonic() - start < 4
    assert s.status == "error" and "timed out after 1s" in s.reason


def test_off_the_main_thread_it_scores_and_times_out():
    src = make(timeout=1)
    out = {}

    def run():
        out["right"] = score(src, "$\\boxed{\\frac{1}{2}}$", "0.5")
        out["wrong"] = score(src, "0.4", "0.5")
        start = time.monotonic()
        out["slow"] = score(src, SLOW[1], SLOW[0])
        out["slow_s"] = time.monotonic() - start

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(60)
    assert out["right"].value == 1.0 and out["wrong"].value == 0.0
    assert out["slow"].status == "error" and "timed out after 1s" in out["slow"].reason and out["slow_s"] < 2


def test_options_that_do_not_apply_to_math_are_errors():
    with pytest.raises(ValidationError, match="'pattern' does not apply to check 'math'"):
        RuleSource.Options(check="math", pattern="x")
    with pytest.raises(ValidationError, match="'no_answer' does not apply to check 'exact'"):
        RuleSource.Options(check="exact", no_answer="wrong")


def test_without_math_verify_a_recipe_naming_it_fails_with_the_install_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(textwrap.dedent("""\
        name: m
        stages:
          - name: grpo
            optimizer: grpo
            data: {train: {generator: addition}}
            rewards: {sources: [{name: m, type: rule, check: math}]}
        """))
    blocked = "import sys; sys.modules['math_verify'] = None; from feedback_rl.commands.cli import main; sys.exit(main())"
    out = subprocess.run([sys.executable, "-c", blocked, "validate", str(recipe)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "r.yaml:6" in lines[0] and "pip install 'feedback_rl[math]'" in lines[0]
