"""What --resume compares: the differences it names, the keys free to change, the stages a checkpoint has begun."""
from pathlib import Path

import pytest

from feedback_rl.run import checkpoint as ckpt
from feedback_rl.errors import UserError
from feedback_rl.config.recipe import validate
from feedback_rl.run.resume import check_compatible, diff
from feedback_rl.run.folder import resolved


def recipe(**stage_edits):
    stage = {"name": "sft", "optimizer": "sft", "data": {"train": {"generator": "addition"}}}
    second = {"name": "grpo", "optimizer": {"type": "grpo"}, "data": {"train": {"generator": "addition"}},
              "rewards": {"sources": [{"name": "em", "type": "rule", "check": "exact"}]}}
    for key, value in stage_edits.items():
        stage[key] = value
    return validate({"name": "r", "stages": [stage, second]}, Path("r.yaml"))


def test_a_changed_value_is_named_by_its_key_path_old_and_new():
    old = resolved(recipe(train={"steps": 60}))
    assert diff(old, resolved(recipe(train={"steps": 20}))) == ["stages[0].train.steps: 60 → 20"]
    assert diff(old, resolved(recipe(train={"steps": 60}, optimizer={"type": "sft", "max_length": 8}))) == [
        "stages[0].optimizer.max_length: null → 8"]


def test_naming_a_plugin_default_is_no_change():
    assert diff(resolved(recipe()), resolved(recipe(optimizer={"type": "sft", "max_length": None}))) == []


def test_the_name_output_dir_loggers_checkpointing_and_warn_frequency_are_free():
    old = resolved(recipe())
    new = resolved(recipe(checkpoint={"every": 5, "keep": 1}, health={"warn_every": 3}))
    new |= {"name": "other", "output_dir": "elsewhere", "loggers": [{"type": "tensorboard"}]}
    assert diff(old, new) == []
    assert diff(old, resolved(recipe(health={"warn_every": 3, "nonfinite": "stop"}))) == [
        "stages[0].health.nonfinite: 'skip' → 'stop'"]


def test_only_the_stages_a_checkpoint_has_begun_must_match():
    lock = {"resolved": resolved(recipe())}
    changed_second = recipe()
    changed_second.stages[1].train.lr = 0.5
    check_compatible(lock, changed_second, Path("runs/r"), begun=1)  # stage 2 not begun: allowed
    with pytest.raises(UserError, match=r"in stages\[1\]\.train\.lr: 1e-05 → 0\.5;"):
        check_compatible(lock, changed_second, Path("runs/r"), begun=2)
    with pytest.raises(UserError, match=r"in seed: 0 → 4"):
        check_compatible(lock, recipe().model_copy(update={"seed": 4}), Path("runs/r"), begun=0)


@pytest.mark.parametrize("tag,begun", [("00-sft-step0000002", 1), ("01-grpo-step0000000", 1),
                                       ("01-grpo-step0000003", 2), ("02-done", 2)])
def test_a_checkpoint_tag_says_how_many_stages_it_has_begun(tag, begun):
    assert ckpt.stages_begun(Path("runs/r/checkpoints") / tag) == begun
    assert ckpt.stages_begun(None) == 0


def test_the_stage_end_checkpoint_sorts_between_the_stages():
    stages = ["sft", "grpo"]
    names = sorted([ckpt.tag(0, "sft", 8), ckpt.start_tag(1, stages), ckpt.tag(1, "grpo", 1), ckpt.start_tag(2, stages)])
    assert names == ["00-sft-step0000008", "01-grpo-step0000000", "01-grpo-step0000001", "02-done"]
