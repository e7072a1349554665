"""The one-step-off worker on its own: it generates from the weights it was handed (not the ones
trained since), splits the CPU threads only while it generates, and a batch in flight survives a
checkpoint round trip unchanged."""
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from feedback_rl import PluginContext, SamplingParams
from feedback_rl.loop.overlap import RolloutWorker
from feedback_rl.rows.synthetic import addition
from frl_plugins.backends.hf import HFBackend


def worker(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    backend = HFBackend(HFBackend.Options(), PluginContext(name="hf", run_dir="."))
    rows = addition("train", 16, 0, 0)
    return model, RolloutWorker(backend, model, tok, rows, SamplingParams(max_new_tokens=4), 2, None, seed=5)


def test_the_batch_comes_from_the_weights_handed_over_not_the_ones_trained_since(tiny_model_dir):
    model, w = worker(tiny_model_dir)
    w.submit(1, [0, 1, 2], model, version=0)
    with torch.no_grad():   # "training" while it generates: the worker's copy must not see this
        for p in model.parameters():
            p.add_(torch.randn_like(p))   # draws from the global generator too
    batch = w.take(1)
    assert batch.version == 0 and batch.indices == [0, 1, 2] and len(batch.gens) == 6
    fresh, w2 = worker(tiny_model_dir)
    w2.submit(1, [0, 1, 2], fresh, version=0)
    again = w2.take(1)
    # same weights as handed over, same step seed: the same completions, whatever happened after
    assert [g.completion_ids for g in batch.gens] == [g.completion_ids for g in again.gens]
    assert all(torch.equal(a.logprobs, b.logprobs) for a, b in zip(batch.gens, again.gens))


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_threads_are_split_while_it_generates_and_given_back_after(tiny_model_dir, two_threads):
    model, w = worker(tiny_model_dir)
    w.submit(1, [0, 1], model, version=0)
    assert torch.get_num_threads() == 1   # the trainer's half while the batch generates
    w.take(1)
    assert torch.get_num_threads() == 2


def test_waiting_before_the_backward_gives_the_threads_back_and_keeps_the_batch(tiny_model_dir, two_threads):
    # the engine waits here before its first backward: a fixed point, so every op's thread count
    # (and the update's rounding) is the same in every run of a recipe
    model, w = worker(tiny_model_dir)
    w.submit(1, [0, 1], model, version=0)
    w.pending.job.join()          # generated; the trainer has not asked for it yet
    assert torch.get_num_threads() == 1
    w.wait()
    assert torch.get_num_threads() == 2 and w.pending is not None
    assert len(w.take(1).gens) == 4


def test_a_batch_in_flight_round_trips_through_a_checkpoint(tiny_model_dir):
    model, w = worker(tiny_model_dir)
    w.submit(4, [3, 5], model, version=3)
    state = w.state_dict()     # waits for it; it stays pending
    assert state["step"] == 4 and w.pending is not None
    _, restored = worker(tiny_model_dir)
    restored.load_state_dict(state)
    a, b = w.take(4), restored.take(4)
    assert b.version == 3 and b.prompts.ids == a.prompts.ids and b.prompts.groups == a.prompts.groups
    assert [g.completion_ids for g in a.gens] == [g.completion_ids for g in b.gens]
    assert restored.take(5) is None          # nothing for a step it was not handed
