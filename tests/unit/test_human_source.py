"""The human source: enqueue without blocking, labels come back once and in the optimizer's shapes."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from feedback_rl import BinaryFeedback, PairFeedback, PluginContext, Rollout, ScalarFeedback
from feedback_rl.config.shapes import buildable
from feedback_rl.loop.feedback import build
from frl_plugins.rewards.human.source import HumanOptions, HumanSource


def shaped(kind, judgments):
    """What the core makes of a source's late judgments for an optimizer consuming ``kind``."""
    return build(kind, [], [], judgments, pointwise=False, tokenizer=None)


def texts(rollouts):
    return [r.completion for r in rollouts]


def make(tmp_path, **opts):
    ctx = PluginContext(name="people", run_dir=tmp_path, stage="dpo", warn=lambda m: warnings.append(m))
    return HumanSource(HumanOptions(**opts), ctx)


warnings: list[str] = []


def ro(prompt, completion, group=0, logprobs=None):
    return Rollout(prompt=prompt, completion=completion, row={"answer": "2"}, group=group, prompt_ids=[1, 2],
                   completion_ids=[3], logprobs=None if logprobs is None else torch.tensor(logprobs))


def test_gives_matches_the_task():
    assert buildable(HumanSource.judgments(HumanOptions(task="pairwise"))) == {"pairs", "binary"}
    assert buildable(HumanSource.judgments(HumanOptions(task="thumbs"))) == {"binary"}
    assert buildable(HumanSource.judgments(HumanOptions(task="rating"))) == {"scalar", "binary", "pairs"}


def test_async_compare_enqueues_and_returns_ties_at_once(tmp_path):
    src = make(tmp_path, per_step=2)
    assert src.pairwise
    pairs = [(ro(f"{k}+1=", "2", k), ro(f"{k}+1=", "3", k)) for k in range(3)] + [(ro("x", "same"), ro("x", "same"))]
    t0 = time.monotonic()
    prefs = src.compare(pairs)
    assert time.monotonic() - t0 < 1.0
    assert [p.winner for p in prefs] == [None] * 4
    assert (tmp_path / "labels.sqlite").exists()
    assert src.metrics()["queue_depth"] == 2  # per_step items; identical completions are never sent
    assert src.collect() == []


def test_labels_come_back_once_as_pairs_and_binary(tmp_path):
    src = make(tmp_path, per_step=3)
    src.compare([(ro(f"{k}+1=", "A", k), ro(f"{k}+1=", "B", k)) for k in range(3)])
    items = [src.store.next_item(f"ann{k}") for k in range(3)]
    for item, choice in zip(items, ["a", "b", "tie"]):
        src.store.submit(item["id"], "ann", choice)
    late = src.collect()
    pairs, binary = shaped("pairs", late), shaped("binary", late)
    assert isinstance(pairs, PairFeedback) and isinstance(binary, BinaryFeedback)
    assert texts(pairs.chosen) == ["A", "B"] and texts(pairs.rejected) == ["B", "A"]  # the tie gives nothing
    assert texts(binary.rollouts) == ["A", "B", "B", "A"] and binary.desirable == [True, False, True, False]
    assert src.collect() == []
    assert src.metrics()["labels_consumed"] == 3


def test_a_resumed_source_takes_up_at_its_checkpoint_and_a_fresh_one_at_the_start(tmp_path):
    src = make(tmp_path, per_step=2)
    src.compare([(ro(f"{k}+1=", "A", k), ro(f"{k}+1=", "B", k)) for k in range(2)])
    first = src.store.next_item("ann")
    src.store.submit(first["id"], "ann", "a")
    assert len(shaped("pairs", src.collect())) == 1
    saved = src.state_dict()
    src.close()
    resumed = make(tmp_path, per_step=2)
    resumed.load_state_dict(saved)
    assert resumed.collect() == []
    assert resumed.store.next_item("bob")["id"] != first["id"]  # the other item is still pending
    fresh = make(tmp_path, per_step=2)  # a new run's model has seen no label yet
    assert texts(shaped("pairs", fresh.collect()).chosen) == ["A"]


def test_thumbs_and_ratings_become_binary_and_scalars(tmp_path):
    thumbs = make(tmp_path / "t", task="thumbs", per_step=2)
    thumbs.score([ro("1+1=", "2"), ro("1+1=", "5")])
    for who in ("a1", "a2"):
        item = thumbs.store.next_item(who)
        thumbs.store.submit(item["id"], who, "up" if item["a"] == "2" else "down")
    fb = shaped("binary", thumbs.collect())
    assert sorted(zip(texts(fb.rollouts), fb.desirable)) == [("2", True), ("5", False)]

    rating = make(tmp_path / "r", task="rating", per_step=2)
    assert [s.status for s in rating.score([ro("1+1=", "2"), ro("1+1=", "7")])] == ["abstain", "abstain"]
    for who in ("a1", "a2"):
        item = rating.store.next_item(who)
        rating.store.submit(item["id"], who, "5" if item["a"] == "2" else "1")
    late = rating.collect()
    scalar, binary, pairs = (shaped(kind, late) for kind in ("scalar", "binary", "pairs"))
    assert isinstance(scalar, ScalarFeedback)
    got = dict(zip([r.completion for r in scalar.rollouts], scalar.rewards.tolist()))
    assert got == {"2": 1.0, "7": -1.0}  # (rating - 3) / 2
    assert scalar.rollouts[0].prompt_ids == [1, 2]
    # the margin is the reward gap, as for pairs of scored rollouts: (5 - 3)/2 - (1 - 3)/2 = 2
    assert texts(pairs.chosen) == ["2"] and texts(pairs.rejected) == ["7"] and pairs.margins == [2.0]
    assert sorted(zip(texts(binary.rollouts), binary.desirable)) == [("2", True), ("7", False)]


def test_uncertain_sampling_picks_the_pair_the_policy_is_least_sure_about(tmp_path):
    src = make(tmp_path, per_step=1, sampling="uncertain")
    sure = (ro("1+1=", "A", 0, [-0.1]), ro("1+1=", "B", 0, [-5.0]))
    unsure = (ro("2+1=", "C", 1, [-1.0]), ro("2+1=", "D", 1, [-1.1]))
    src.compare([sure, unsure])
    assert src.store.next_item("ann")["prompt"] == "2+1="


def test_blocking_mode_waits_for_labels_then_collect_has_them(tmp_path):
    src = make(tmp_path, per_step=1, mode="blocking", timeout=10)

    def person():
        while (item := src.store.next_item("ann")) is None:
            time.sleep(0.05)
        time.sleep(0.3)
        src.store.submit(item["id"], "ann", "a")

    t = threading.Thread(target=person)
    t.start()
    t0 = time.monotonic()
    src.compare([(ro("1+1=", "A"), ro("1+1=", "B"))])
    waited = time.monotonic() - t0
    t.join()
    assert 0.25 < waited < 5
    assert texts(shaped("pairs", src.collect()).chosen) == ["A"]


def test_blocking_mode_times_out_with_a_warning(tmp_path):
    warnings.clear()
    src = make(tmp_path, per_step=1, mode="blocking", timeout=0.3)
    t0 = time.monotonic()
    src.compare([(ro("1+1=", "A"), ro("1+1=", "B"))])
    assert 0.3 <= time.monotonic() - t0 < 2
    assert warnings and "not all labeled" in warnings[0]
    assert src.metrics()["queue_depth"] == 1


def test_db_option_resolves_relative_to_the_recipe(tmp_path):
    ctx = PluginContext(name="people", run_dir=tmp_path / "run", stage="s", recipe_dir=tmp_path)
    src = HumanSource(HumanOptions(db="shared/labels.sqlite"), ctx)
    assert src.store.path == tmp_path / "shared" / "labels.sqlite"


def test_unknown_option_is_rejected():
    with pytest.raises(Exception):
        HumanOptions(per_stp=3)


def test_max_pending_holds_back_new_items_until_people_catch_up(tmp_path):
    src = make(tmp_path, per_step=4, max_pending=6)
    batch = lambda k: [(ro(f"{k}{j}+1=", "2", j), ro(f"{k}{j}+1=", "3", j)) for j in range(4)]  # noqa: E731
    src.compare(batch(1))
    src.compare(batch(2))   # only 2 more fit under the limit
    src.compare(batch(3))   # the queue is full: nothing is added
    assert src.store.stats()["queue_depth"] == 6.0


def test_a_rating_collected_again_carries_its_behaviour_logprobs_and_version_exactly(tmp_path):
    src = make(tmp_path, task="rating", per_step=1)
    logprobs = torch.tensor([-0.123456789, -2.5, -1e-7], dtype=torch.float32)
    sampled = Rollout(prompt="1+1=", completion="2", row={"answer": "2"}, group=0, prompt_ids=[1, 2],
                      completion_ids=[3, 4, 5], logprobs=logprobs, policy_version=7, completion_mask=[1, 0, 1])
    src.score([sampled])
    item = src.store.next_item("ann")
    src.store.submit(item["id"], "ann", "4")
    (rating,) = src.collect()
    back = rating.rollout
    assert back.logprobs is not None and back.logprobs.dtype == torch.float32
    assert torch.equal(back.logprobs, logprobs)
    assert back.policy_version == 7
    assert (back.prompt_ids, back.completion_ids, back.completion_mask) == ([1, 2], [3, 4, 5], [1, 0, 1])


def test_each_side_of_a_pair_keeps_its_own_logprobs_and_version(tmp_path):
    src = make(tmp_path, per_step=1)
    a = Rollout(prompt="1+1=", completion="2", row={}, group=0, prompt_ids=[1], completion_ids=[3],
                logprobs=torch.tensor([-0.5]), policy_version=3)
    b = Rollout(prompt="1+1=", completion="5", row={}, group=0, prompt_ids=[1], completion_ids=[8, 9],
                logprobs=torch.tensor([-1.25, -3.0]), policy_version=4)
    src.compare([(a, b)])
    src.store.submit(src.store.next_item("ann")["id"], "ann", "b")
    (pref,) = src.collect()
    assert torch.equal(pref.a.logprobs, a.logprobs) and pref.a.policy_version == 3
    assert torch.equal(pref.b.logprobs, b.logprobs) and pref.b.policy_version == 4


def test_an_imported_item_has_no_logprobs(tmp_path):
    src = make(tmp_path, task="rating")
    item = src.store.enqueue("rating", "1+1=", "2")  # what `frl label import` stores: text only
    src.store.submit(item, "ann", "5")
    (rating,) = src.collect()
    assert rating.rollout.logprobs is None and rating.rollout.completion_ids == []


def test_a_step_replayed_after_resume_enqueues_no_item_twice(tmp_path):
    batch = lambda k: [(ro(f"{k}{j}+1=", "2", j), ro(f"{k}{j}+1=", "3", j)) for j in range(10)]  # noqa: E731
    src = make(tmp_path, per_step=3)
    src.compare(batch(1))
    saved = src.state_dict()  # the checkpoint
    src.compare(batch(2))     # the step after it, then a crash
    before = src.store.stats()["queue_depth"]
    first = [src.store.next_item(f"p{k}")["prompt"] for k in range(6)]
    src.close()
    resumed = make(tmp_path, per_step=3)
    resumed.load_state_dict(saved)
    resumed.compare(batch(2))  # the same step, replayed: it asks for the items it asked for before
    assert resumed.store.stats()["queue_depth"] == before == 6
    assert sorted(first) == sorted(x["prompt"] for x in _items(resumed.store))


def test_a_resumed_source_draws_the_items_the_first_run_drew(tmp_path):
    batch = lambda k: [(ro(f"{k}{j}+1=", "2", j), ro(f"{k}{j}+1=", "3", j)) for j in range(10)]  # noqa: E731
    src = make(tmp_path / "first", per_step=3)
    src.compare(batch(1))
    saved = src.state_dict()
    src.compare(batch(2))
    resumed = make(tmp_path / "other", per_step=3)  # a database of its own: only the stream decides
    resumed.load_state_dict(saved)
    resumed.compare(batch(2))
    assert [x["prompt"] for x in _items(resumed.store)] == [x["prompt"] for x in _items(src.store)][3:]


def _items(store):
    return [dict(r) for r in store._conn().execute("SELECT * FROM items ORDER BY id")]
