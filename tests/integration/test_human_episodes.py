"""Episodes in the labeling queue: an item keeps each side's turns (the model's and the environment's, with their
roles), the HTTP API returns them beside the transcripts, the terminal shows them, and a label still trains on the
ids the policy sampled, mask included."""
from __future__ import annotations

import pytest
import torch

from feedback_rl import PluginContext, Rollout
from frl_plugins.rewards.human.annotator import Client
from frl_plugins.rewards.human.app import spawn
from frl_plugins.rewards.human.items import label_rollouts
from frl_plugins.rewards.human.source import HumanOptions, HumanSource
from frl_plugins.rewards.human.store import LabelStore
from frl_plugins.rewards.human.terminal import label_loop

CALL = '<tool_call>{"name": "calculate", "arguments": {"expression": "6*7"}}</tool_call>'


def episode(answer: str, k: int) -> Rollout:
    turns = [{"role": "assistant", "content": CALL}, {"role": "tool", "content": "42"},
             {"role": "assistant", "content": answer}]
    return Rollout(prompt="What is 6*7?", completion="\n\n".join(f"[{t['role']}] {t['content']}" for t in turns),
                   row={"prompt": "What is 6*7?", "answer": "42"}, group=0, prompt_ids=[1, 2],
                   completion_ids=[3, 4, 5, 6, 7], completion_mask=[1, 1, 0, 1, 1], uid=f"e{k}",
                   episode={"turns": turns, "rewards": [None, 1.0]})


@pytest.fixture
def queued(tmp_path):
    src = HumanSource(HumanOptions(per_step=1), PluginContext(name="people", run_dir=tmp_path, stage="dpo"))
    try:
        src.compare([(episode("42", 0), episode("41", 1))])
    finally:
        src.close()
    return tmp_path / "labels.sqlite"


def test_the_http_api_returns_each_sides_turns_with_their_roles(queued):
    store = LabelStore(queued)
    token = store.add_annotator("ann")
    server, url = spawn(queued)
    try:
        status, body = Client(url, token).call("/api/next")
        item = body["item"]
    finally:
        server.terminate()
        server.wait(10)
    assert status == 200
    assert [t["role"] for t in item["a_turns"]] == ["assistant", "tool", "assistant"]
    assert [item["a_turns"][-1]["content"], item["b_turns"][-1]["content"]] == ["42", "41"]
    assert item["a"].startswith("[assistant] <tool_call>")   # the transcript, for clients that show text


def test_the_terminal_shows_each_sides_turns(queued):
    shown: list[str] = []
    label_loop(LabelStore(queued), "me", read=lambda _: "q", echo=shown.append)
    text = "\n".join(shown)
    assert "  A:\n    ['assistant'] '<tool_call>" in text and "    ['tool'] '42'" in text
    assert text.index("    ['assistant'] '42'") < text.index("  B:\n") < text.index("    ['assistant'] '41'")


def test_a_label_gives_back_the_episodes_ids_and_mask(queued):
    store = LabelStore(queued)
    store.add_annotator("ann")
    item = store.next_item("ann")
    store.submit(item["id"], "ann", "a")
    a, b = label_rollouts(store.all_labels()[0])
    assert a.completion_ids == [3, 4, 5, 6, 7] and a.completion_mask == [1, 1, 0, 1, 1]


def test_a_label_on_a_split_episode_gives_back_every_segment(tmp_path):
    # the chat template split the episodes after their tool turn: the second turn is a sequence of its own
    def split(r: Rollout) -> Rollout:
        later = Rollout(prompt="", completion="", row=r.row, group=0, prompt_ids=[1, 2, 3, 4, 9, 5],
                        completion_ids=[6, 7], completion_mask=[1, 1], uid=r.uid + "/s1",
                        logprobs=torch.tensor([-0.5, -0.25]), policy_version=3)
        r.completion_ids, r.completion_mask, r.segments = [3, 4], [1, 1], [later]
        return r
    src = HumanSource(HumanOptions(per_step=1), PluginContext(name="people", run_dir=tmp_path, stage="dpo"))
    try:
        src.compare([(split(episode("42", 0)), episode("41", 1))])
    finally:
        src.close()
    store = LabelStore(tmp_path / "labels.sqlite")
    store.add_annotator("ann")
    store.submit(store.next_item("ann")["id"], "ann", "a")
    a, b = label_rollouts(store.all_labels()[0])
    assert a.completion_ids == [3, 4] and len(a.segments) == 1 and not b.segments
    (seg,) = a.segments
    assert (seg.prompt_ids, seg.completion_ids, seg.completion_mask) == ([1, 2, 3, 4, 9, 5], [6, 7], [1, 1])
    assert seg.logprobs.tolist() == [-0.5, -0.25] and seg.policy_version == 3
