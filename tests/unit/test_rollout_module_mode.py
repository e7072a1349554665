"""A backend that holds its own weights (vLLM) never reads the policy module's mode, so the rollout path leaves
it alone: under rollout.overlap it runs in a worker thread while the trainer uses that module, and flipping it
to eval() made dropout depend on timing. A backend that generates from the module gets it in eval mode."""
from __future__ import annotations

import threading

import torch

from feedback_rl import Backend, Generation, SamplingParams
from feedback_rl.loop.rollout import run_backend


class Recording(Backend):
    name = "recording"

    def __init__(self, holds: bool):
        super().__init__(None, None)
        self.holds_weights = holds
        self.seen: list[bool] = []
        self.inside = threading.Event()
        self.release = threading.Event()

    def generate(self, model, tokenizer, prompt_ids, sampling):
        self.seen.append(model.training)
        self.inside.set()
        self.release.wait(5)
        return [Generation(list(p), [1], None, False) for p in prompt_ids]


def test_a_backend_with_its_own_weights_leaves_the_trainers_module_in_train_mode_while_it_generates():
    policy = torch.nn.Dropout(0.5).train()
    backend = Recording(holds=True)
    worker = threading.Thread(target=run_backend, args=(backend, policy, None, [[1, 2]], SamplingParams()))
    worker.start()
    assert backend.inside.wait(5)
    during = policy.training          # what the trainer's forward would see right now
    backend.release.set()
    worker.join(5)
    assert during is True and policy.training is True


def test_a_backend_that_generates_from_the_module_gets_it_in_eval_mode_and_gives_it_back():
    policy = torch.nn.Dropout(0.5).train()
    backend = Recording(holds=False)
    backend.release.set()
    run_backend(backend, policy, None, [[1, 2]], SamplingParams())
    assert backend.seen == [False] and policy.training is True
