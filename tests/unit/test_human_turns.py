"""A conversational prompt reaches the labeling app as turns (the app shows them one by one)."""
from __future__ import annotations

from feedback_rl import PluginContext, Rollout
from frl_plugins.rewards.human.source import HumanOptions, HumanSource

TURNS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]


def ro(prompt, completion):
    return Rollout(prompt="<|system|>...rendered", completion=completion, row={"prompt": prompt, "answer": "4"},
                   group=0, prompt_ids=[1], completion_ids=[2])


def test_a_conversation_is_stored_with_its_turns_and_a_plain_prompt_with_none(tmp_path):
    src = HumanSource(HumanOptions(per_step=2), PluginContext(name="people", run_dir=tmp_path, stage="dpo"))
    try:
        src.compare([(ro(TURNS, "4"), ro(TURNS, "5")), (ro("2+2=", "4"), ro("2+2=", "5"))])
        items = [src.store.next_item("ann"), src.store.next_item("bob")]
    finally:
        src.close()
    conv, plain = sorted(items, key=lambda item: item["turns"] is None)
    assert conv["turns"] == TURNS and conv["prompt"] == "<|system|>...rendered"
    assert plain["turns"] is None


def test_the_terminal_shows_a_conversation_turn_by_turn_as_quoted_literals(tmp_path):
    from frl_plugins.rewards.human.store import LabelStore
    from frl_plugins.rewards.human.terminal import label_loop
    store = LabelStore(tmp_path / "l.sqlite")
    store.enqueue("thumbs", "<|user|>rendered", "4", meta={"turns": [{"role": "user", "content": "\x1b[2Jhi"}]})
    shown: list[str] = []
    label_loop(store, "me", read=lambda _: "q", echo=shown.append)
    assert "prompt:\n  ['user'] '\\x1b[2Jhi'" in shown and not any("\x1b" in s for s in shown)
