"""The labeling queue: idempotent labels, changes in history, cursors that survive a reopen, metrics."""
from __future__ import annotations

import math
import time

import pytest

from frl_plugins.rewards.human.store import LabelError, LabelStore


@pytest.fixture
def store(tmp_path):
    return LabelStore(tmp_path / "labels.sqlite")


def test_store_uses_wal_mode(store):
    assert store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_tokens_identify_annotators_and_are_stored_hashed(store):
    token = store.add_annotator("ann")
    assert store.annotator_for(token) == "ann"
    assert store.annotator_for("wrong") is None and store.annotator_for(None) is None
    stored = store._conn().execute("SELECT token_sha256 FROM annotators").fetchone()[0]
    assert token not in stored


def test_identical_resubmission_is_stored_once(store):
    i = store.enqueue("pairwise", "1+1=", "2", "3")
    assert store.submit(i, "ann", "a") == "stored"
    assert store.submit(i, "ann", "a") == "unchanged"
    assert len(store.all_labels()) == 1 and store.history() == []


def test_changed_label_is_updated_and_recorded_in_history(store):
    i = store.enqueue("pairwise", "1+1=", "2", "3")
    store.submit(i, "ann", "a")
    assert store.submit(i, "ann", "b") == "changed"
    labels = store.all_labels()
    assert [x.choice for x in labels] == ["b"]
    assert [(h["old_choice"], h["new_choice"]) for h in store.history()] == [("a", "b")]


@pytest.mark.parametrize("task,choice", [("pairwise", "up"), ("thumbs", "a"), ("rating", "6"), ("rating", "")])
def test_wrong_choice_is_refused_and_nothing_is_stored(store, task, choice):
    i = store.enqueue(task, "p", "x", "y" if task == "pairwise" else None)
    with pytest.raises(LabelError) as e:
        store.submit(i, "ann", choice)
    assert e.value.status == 422
    assert store.all_labels() == []


def test_unknown_item_is_a_404(store):
    with pytest.raises(LabelError) as e:
        store.submit(99, "ann", "a")
    assert e.value.status == 404


def test_next_item_leases_items_and_skips_labeled_or_skipped_ones(store):
    i1 = store.enqueue("thumbs", "p1", "x")
    i2 = store.enqueue("thumbs", "p2", "y")
    assert store.next_item("ann")["id"] == i1
    assert store.next_item("bob")["id"] == i2          # i1 is leased to ann
    assert store.next_item("ann")["id"] == i1          # ann still holds it
    store.submit(i1, "ann", "up")
    store.skip(i2, "bob")
    assert store.next_item("bob") is None              # i1 labeled, i2 skipped by bob
    assert store.next_item("ann")["id"] == i2


def test_take_returns_each_label_once_even_after_reopening(tmp_path):
    path = tmp_path / "labels.sqlite"
    s = LabelStore(path)
    ids = s.enqueue_many([("thumbs", f"p{k}", "x", None, {}) for k in range(3)])
    s.submit(ids[0], "ann", "up")
    got, cursor = s.take("run", (0, 0))
    assert [x.item_id for x in got] == [ids[0]]
    assert s.take("run", cursor)[0] == []
    s.submit(ids[1], "ann", "down")
    s.close()
    s2 = LabelStore(path)  # a restarted trainer, with the cursor its checkpoint held
    assert [x.item_id for x in s2.take("run", cursor)[0]] == [ids[1]]
    assert [x.item_id for x in s2.take("other", (0, 0))[0]] == [ids[0], ids[1]]  # cursors are per consumer
    assert s2.next_item("ann")["id"] == ids[2]  # the pending item is still served


def test_stats_count_queue_age_rate_and_agreement(store):
    ids = store.enqueue_many([("thumbs", f"p{k}", "x", None, {}) for k in range(3)], want=2)
    store._conn().execute("UPDATE items SET created=created-100")
    for who in ("ann", "bob"):
        store.submit(ids[0], who, "up")
    store.submit(ids[1], "ann", "up")
    store.submit(ids[1], "bob", "down")
    s = store.stats()
    assert s["queue_depth"] == 1  # only ids[2] still wants labels
    assert 99 < s["oldest_pending_s"] < 200
    assert s["labels_total"] == 4
    assert s["labels_per_minute"] == pytest.approx(4 * 60 / 300)
    assert s["agreement"] == pytest.approx(0.5)  # ids[0] agreed, ids[1] did not


def test_agreement_is_nan_without_doubly_labeled_items(store):
    assert math.isnan(store.stats()["agreement"])
