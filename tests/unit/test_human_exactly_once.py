"""Exactly once relative to the checkpointed model: the source's cursor lives in its state_dict, so a
trainer killed between collect() and the next checkpoint trains again, after resume, on the labels
it took after that checkpoint, and on no other."""
from __future__ import annotations

from feedback_rl import PluginContext, Rollout
from feedback_rl.data import to_pairs
from frl_plugins.rewards.human.source import HumanOptions, HumanSource


def make(tmp_path):
    return HumanSource(HumanOptions(per_step=100, max_pending=1000),
                       PluginContext(name="people", run_dir=tmp_path, stage="dpo"))


def ro(prompt, completion, group):
    return Rollout(prompt=prompt, completion=completion, row={}, group=group, prompt_ids=[5], completion_ids=[6])


def label(src, n, choice="a"):
    """People label ``n`` fresh pairs; returns their prompts."""
    base = src.store.stats()["labels_total"]
    prompts = [f"{int(base) + k}+0=" for k in range(n)]
    src.compare([(ro(p, "X", k), ro(p, "Y", k)) for k, p in enumerate(prompts)])
    for _ in prompts:
        item = src.store.next_item("ann")
        src.store.submit(item["id"], "ann", choice)
    return prompts


def trained(judgments):
    """The prompts of the pairs the core makes of the judgments: what the optimizer trains on."""
    return [r.prompt for r in to_pairs(judgments).chosen]


def test_a_kill_after_collect_loses_no_label_and_trains_none_twice(tmp_path):
    src = make(tmp_path)
    model = []                                   # what the checkpointed weights have seen
    a = label(src, 3)
    model += trained(src.collect())              # step 1
    ckpt_state, ckpt_model = src.state_dict(), list(model)   # checkpoint after step 1
    b = label(src, 2)
    model += trained(src.collect())              # step 2: trained, but the kill comes before a checkpoint
    assert sorted(model) == sorted(a + b)
    src.close()                                  # killed

    resumed = make(tmp_path)
    resumed.load_state_dict(ckpt_state)
    model = list(ckpt_model)                     # the weights went back to the checkpoint
    again = trained(resumed.collect())
    assert sorted(again) == sorted(b)                            # exactly the labels after the checkpoint, again
    model += again
    c = label(resumed, 2)
    model += trained(resumed.collect())
    assert sorted(model) == sorted(a + b + c)      # every label exactly once
    assert resumed.collect() == []
    con = resumed.store._conn()
    consumed = [r[0] for r in con.execute("SELECT label_id FROM consumed WHERE consumer='dpo/people'")]
    assert sorted(consumed) == list(range(1, 8))  # the audit trail still names each label once


def test_a_changed_label_comes_again_with_its_new_choice(tmp_path):
    src = make(tmp_path)
    (p,) = label(src, 1, "a")
    assert [r.completion for r in to_pairs(src.collect()).chosen] == ["X"]
    item = src.store.find_item("pairwise", p, "X", "Y")
    assert src.store.submit(item, "ann", "b") == "changed"
    pairs = to_pairs(src.collect())
    assert [r.prompt for r in pairs.chosen] == [p]
    assert [r.completion for r in pairs.chosen] == ["Y"] and [r.completion for r in pairs.rejected] == ["X"]
    assert src.collect() == []


def test_state_dict_round_trips_and_an_empty_state_is_a_fresh_start(tmp_path):
    src = make(tmp_path)
    label(src, 2)
    src.collect()
    state = src.state_dict()
    assert state["cursor"] == [2, 0] and state["consumed"] == 2
    fresh = make(tmp_path)
    fresh.load_state_dict({})  # a checkpoint from before this source existed
    assert len(trained(fresh.collect())) == 2
