"""The reasoning-gym plugin on the real reasoning-gym: rows of two tasks, their own graders, option errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import reasoning_gym
from pydantic import ValidationError

from feedback_rl import PluginContext, Rollout, UserError
from feedback_rl.data import Dataset
from frl_plugins.reasoning_gym import frl_register_datasets, frl_register_reward_sources
from frl_plugins.reasoning_gym.data import ReasoningGymData
from frl_plugins.reasoning_gym.reward import ReasoningGymScore, extract
from frl_plugins.reasoning_gym.tasks import STRIDE


def rows(task, **opts):
    return ReasoningGymData(ReasoningGymData.Options(reasoning_gym=task, **opts), Path(".")).rows()


def grade(completions, row, **opts):
    src = ReasoningGymScore(ReasoningGymScore.Options(**opts), PluginContext(name="task", run_dir=Path(".")))
    return src.score([Rollout(prompt="q", completion=c, row=row, group=0, prompt_ids=[], completion_ids=[])
                      for c in completions])


def values(completions, row, **opts):
    scores = grade(completions, row, **opts)
    assert all(s.is_ok for s in scores), scores
    return [s.value for s in scores]


@pytest.mark.parametrize("task", ["leg_counting", "spell_backward"])
def test_rows_are_the_tasks_items_and_the_same_on_every_call(task):
    made = rows(task, size=4, seed=3)
    direct = reasoning_gym.create_dataset(task, size=4, seed=3 * STRIDE)
    assert [r["prompt"] for r in made] == [direct[i]["question"] for i in range(4)]
    assert [r["answer"] for r in made] == [direct[i]["answer"] for i in range(4)]
    assert all(r["task"] == task and r["metadata"]["source_dataset"] == task for r in made)
    assert made[0]["reasoning_gym"] == {"task": task, "config": {}}
    assert rows(task, size=4, seed=3) == made


def test_consecutive_seeds_share_no_item_though_reasoning_gyms_own_seeds_do():
    raw0 = reasoning_gym.create_dataset("leg_counting", size=50, seed=0)
    raw1 = reasoning_gym.create_dataset("leg_counting", size=50, seed=1)
    assert raw0[1]["question"] == raw1[0]["question"]  # the trap: item i of seed 1 is item i+1 of seed 0
    train = {r["prompt"] for r in rows("leg_counting", size=200, seed=0)}
    assert not train & {r["prompt"] for r in rows("leg_counting", size=200, seed=1)}


def test_config_instruction_and_turns():
    made = rows("leg_counting", size=3, config={"min_animals": 1, "max_animals": 1},
                instruction="Answer with a number only.", turns=True)
    turn = made[0]["prompt"]
    assert turn == [{"role": "user", "content": made[0]["question"] + "\nAnswer with a number only."}]
    assert all(len(r["metadata"]["animals"]) == 1 for r in made)


def test_the_tasks_own_grader_with_partial_credit():
    legs = rows("leg_counting", size=1, seed=5)[0]
    gold = legs["answer"]
    assert values([f"Let me count.\n<answer>{gold}</answer>", "<answer>1</answer>",
                   f"<answer>{gold} legs</answer>"], legs) == [1.0, 0.0, len(gold) / len(gold + " legs")]
    word = rows("spell_backward", size=1, seed=2)[0]
    rev = word["answer"]
    half = rev[: len(rev) // 2] + "#" * (len(rev) - len(rev) // 2)
    got = values([f"<answer>{rev}</answer>", f"<answer>{half}</answer>"], word)
    assert got[0] == 1.0 and 0.0 < got[1] < 1.0


def test_extraction_modes():
    assert extract("think\n<answer> 12 </answer>\n<answer>13</answer>", "answer_tag", "answer") == "13"
    assert extract("no tag", "answer_tag", "answer") is None
    assert extract("<final>7</final>", "answer_tag", "final") == "7"
    assert extract("work\n 42 \n\n", "last_line", "answer") == "42"
    assert extract("  42\n", "whole", "answer") == "42" and extract(" \n", "whole", "answer") is None
    assert extract("3 + 4 = 7.", "last_number", "answer") == "7"
    assert extract("It is 1,204 (or -2.5)", "last_number", "answer") == "-2.5"
    assert extract("It is 1,204.", "last_number", "answer") == "1204"
    assert extract("seven", "last_number", "answer") is None
    legs = rows("leg_counting", size=1, seed=5)[0]
    assert values([f"I count\n{legs['answer']}"], legs, extract="last_line") == [1.0]
    assert values([f"<final>{legs['answer']}</final>"], legs, tag="final") == [1.0]


def test_no_answer_is_graded_by_the_task_but_a_foreign_row_or_a_grader_that_raises_is_an_error():
    legs = rows("leg_counting", size=1)[0]
    assert values(["I think it is 12"], legs) == [0.0]  # no <answer> tag: the task grades None as 0.0
    foreign, = grade(["<answer>4</answer>"], {"prompt": "2+2=", "answer": "4"})
    assert foreign.status == "error" and "'reasoning_gym'" in foreign.reason
    broken, = grade(["<answer>4</answer>"], {**legs, "answer": None})
    assert broken.status == "error" and "leg_counting.score_answer raised TypeError" in broken.reason


def test_preflight_counts_rows_that_did_not_come_from_reasoning_gym():
    made = rows("leg_counting", size=3)
    data = Dataset(made + [{"prompt": "x", "answer": "1"}, {"prompt": "y"}], "train.jsonl")
    with pytest.raises(UserError, match=r"^train.jsonl:4: 2 of 5 rows have no 'reasoning_gym' field.*'task'"):
        ReasoningGymScore.preflight(ReasoningGymScore.Options(), PluginContext(name="task", run_dir=Path(".")), data)
    ReasoningGymScore.preflight(ReasoningGymScore.Options(), PluginContext(name="t", run_dir=Path(".")),
                                Dataset(made, "g"))


@pytest.mark.parametrize("opts,message", [
    ({"reasoning_gym": "leg_countin"}, "unknown reasoning-gym task 'leg_countin' (did you mean 'leg_counting'?)"),
    ({"reasoning_gym": "leg_counting", "config": {"min_animal": 2}}, "unknown key 'min_animal' for task "
                                                                      "'leg_counting' (did you mean 'min_animals'?)"),
    ({"reasoning_gym": "leg_counting", "config": {"seed": 2}}, "set 'seed' beside config"),
    ({"reasoning_gym": "leg_counting", "config": {"min_animals": 9, "max_animals": 2}}, "invalid for task"),
    ({"reasoning_gym": "leg_counting", "size": STRIDE + 1}, "less than or equal"),
    ({"reasoning_gym": "leg_counting", "sise": 3}, "Extra inputs"),
])
def test_bad_options_are_validation_errors(opts, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        ReasoningGymData.Options(**opts)


def test_an_eval_with_the_train_seed_is_refused():
    train = ReasoningGymData.Options(reasoning_gym="leg_counting", size=100)
    assert "give data.eval another seed" in ReasoningGymData.check_eval(train, train.model_copy(update={"size": 10}))
    assert ReasoningGymData.check_eval(train, train.model_copy(update={"seed": 1})) is None


def test_the_plugin_registers_its_data_source_and_reward_source():
    got = []
    frl_register_datasets(register=got.append)
    frl_register_reward_sources(register=got.append)
    assert got == [ReasoningGymData, ReasoningGymScore]
    assert ReasoningGymData.name == ReasoningGymScore.name == "reasoning_gym"


def test_an_unknown_config_key_holding_a_newline_is_still_one_line():
    """Found by the recipe fuzzer: a key renamed to 'min_terms\\n' broke the error over two lines."""
    from frl_plugins.reasoning_gym.tasks import check_config
    with pytest.raises(ValueError) as info:
        check_config("basic_arithmetic", {"min_terms\n": 2})
    assert "\n" not in str(info.value) and "'min_terms\\n'" in str(info.value)
