"""`frl train` trains GRPO on a verifiers v1 taskset through the core's rollout endpoint, offline: each episode is
one verifiers rollout (the `null` harness's chat program, installed from the wheelhouse) whose interception server
calls verifiers' training client, which renders the prompt with the policy's tokenizer and POSTs token ids to the
endpoint's /inference/v1/generate. What the core trains on is what verifiers sent and was answered.

Two tasksets: `echo_taskset` (one assistant reply per episode) and `again_taskset` (multi-turn: the user answers
the first reply and the policy replies again, so verifiers' second call extends the first call's ids with the
user's turn)."""
from __future__ import annotations

import pytest
from again_taskset import lowercase_share
from bridge_run import finished_two_steps, train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train(tmp_path_factory.mktemp("vf-grpo"), "echo_taskset", max_turns=1, context=64)


@pytest.fixture(scope="module")
def multi_turn(tmp_path_factory):
    # Two turns of a five-letter word's prompt and replies fill about 80 of the char tokenizer's positions.
    # verifiers' DefaultRenderer drops special tokens from a reply's content before it renders the conversation
    # again (docs/episodes.md, "verifiers"), so a first reply holding <unk>, <pad> or <bos> (one in seven of this
    # model's, measured) comes back as other ids, a split verifiers made. The model here samples none of them, so
    # what is measured is the bridge and the endpoint. (A first reply starting with a newline, rendered back as
    # "\n\n", was one <unk> to the char tokenizer until it gave each newline its token: 2 of 8 runs split then.)
    return train(tmp_path_factory.mktemp("vf-grpo-again"), "again_taskset", max_turns=4, context=128,
                 text_that_renders_back=True)


def test_grpo_trains_two_steps_on_the_tasksets_episodes(run):
    steps = finished_two_steps(run)
    # one generate call per episode, each extending nothing: no split
    assert all(m["env/agent_calls_mean"] == 1.0 and m["env/agent_splits"] == 0.0 for m in steps)


def test_the_trained_ids_are_the_ids_verifiers_sent_and_the_policy_sampled(run):
    told = {e["session"]: e for e in run.episodes}
    assert len(told) == len(run.episodes)  # each episode under its own session: the core's id is the trace's
    for r in run.rollouts:
        e = told[r["uid"]]
        # one call: the prompt verifiers rendered, then the ids the endpoint sampled, all of them trained
        assert r["prompt_ids"] + r["completion_ids"] == e["ids"]
        assert r["mask"] == [1] * len(r["completion_ids"]) and len(r["completion_ids"]) >= 1
        assert e["sampled"] == [False] * len(r["prompt_ids"]) + [True] * len(r["completion_ids"])
        # the episode's reward is the taskset's, computed on the reply the policy sampled
        assert r["episode"]["rewards"][-1] == e["reward"]


def test_grpo_trains_two_steps_on_multi_turn_episodes_each_call_extending_the_last(multi_turn):
    steps = finished_two_steps(multi_turn)
    # two generate calls per episode; the second's ids started with the first's prompt and reply: no split
    assert all(m["env/agent_calls_mean"] == 2.0 and m["env/agent_splits"] == 0.0 for m in steps)
    assert all(m["env/turns_mean"] == 2.0 and m["env/bridge_fallbacks"] == 0.0 for m in steps)
    assert any(m["grad_norm"] > 0 for m in steps)  # some group's rewards differed: GRPO had a signal


def test_a_multi_turn_episode_is_recorded_as_two_replies_with_the_users_turn_between(multi_turn):
    for e in multi_turn.episodes:  # verifiers' side: user, reply, the user answering back, reply
        assert e["turns"] == 2 and [role for role, _ in e["messages"]] == ["user", "assistant", "user", "assistant"]
    for r in multi_turn.recorded:  # the run's rollouts.jsonl
        word = r["prompt"].split("say ", 1)[1].split("\n", 1)[0]
        turns = r["episode"]["turns"]
        assert [t["role"] for t in turns] == ["assistant", "environment", "assistant"], turns
        # the turn between is the user's answer as verifiers' renderer wrote it, up to the next assistant header
        assert f"<|user|>\nagain: {word}\n<|assistant|>\n" in turns[1]["content"]
        assert r["scores"]["verifiers"]["status"] == "ok" and r["episode"]["end"] == "done"


def test_multi_turn_trained_ids_are_what_verifiers_sent_and_the_policy_sampled(multi_turn):
    told = {e["session"]: e for e in multi_turn.episodes}
    assert len(told) == len(multi_turn.episodes)
    for r in multi_turn.rollouts:
        e = told[r["uid"]]
        # ONE sequence: the first prompt, reply 1, the user's turn, reply 2, as verifiers holds the branch
        assert r["prompt_ids"] + r["completion_ids"] == e["ids"]
        # trained exactly where the policy sampled (both replies), never on the user's turn
        assert [False] * len(r["prompt_ids"]) + [m == 1 for m in r["mask"]] == e["sampled"]
        spans = r["episode"]["spans"]
        assert [s[2] for s in spans] == ["assistant", "environment", "assistant"]
        for start, end, role, _ in spans:
            assert end > start and set(r["mask"][start:end]) == {1 if role == "assistant" else 0}
        # each reply's ids are the ones the endpoint answered verifiers with (its content, parsed from them)
        replies = [c for role, c in e["messages"] if role == "assistant"]
        assert replies[-1] == e["reply"] and r["episode"]["rewards"][-1] == e["reward"]
        assert e["reward"] == lowercase_share(e["reply"])  # the taskset's reward, of the second reply
