"""One-step-off rollouts (``rollout.overlap: 1``): step t+1's completions are generated while step t trains.

At step t the engine hands the worker step t+1's prompts and the policy as it stands before step t's
update; the worker generates them in a background thread while the trainer scores, shapes and learns
from step t's batch, which the worker generated the step before. Every batch but a stage's first
therefore trains one update after the weights that sampled it: the engine logs ``rollout/staleness``,
and the policy-gradient optimizers weight each token by ``min(pi_trainer / pi_behaviour, is_cap)``
(their importance-sampling correction, on by default under overlap).

The worker generates from its own copy of the weights, refreshed when a batch is handed over, unless
the backend keeps its own (``Backend.holds_weights``, vLLM): then the weights are pushed to it then.
On CPU the cores are split while the worker generates: it takes half of torch's threads, the trainer
the rest. The engine waits for the batch in flight before its first backward and runs the backward
and the optimizer step on all the threads: a fixed point, so the thread count each op runs with (and
with it the float rounding of the update) never depends on timing, and a resumed run stays
bit-identical. Giving the threads back whenever the worker happens to finish is faster on paper and
was tried: it made two runs of one recipe differ.

A checkpoint holds the batch in flight (its rows and generations), so a resumed run trains on exactly
the batch the uninterrupted run would have; each batch is sampled with a seed of its own step.
"""
from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

from feedback_rl.base import Backend, Generation, SamplingParams
from feedback_rl.loop.rollout import Prompts, encode_prompts, run_backend, with_stops


@dataclass
class Batch:
    """The rollouts of one step, generated (``gens``) or on their way (``job``)."""
    step: int                   # the step it is for
    indices: list[int]          # its rows, as positions in the stage's training rows
    version: int                # the policy version that generated it
    prompts: Prompts
    gens: list[Generation] | None = None
    job: "_Job | None" = None


class _Job(threading.Thread):
    """A function run once in a daemon thread (a stopped run does not wait for a generation in flight)."""

    def __init__(self, fn: Callable[[], Any]):
        super().__init__(daemon=True, name="frl-rollout")
        self.fn, self.value, self.error, self.finished = fn, None, None, False
        self.start()

    def run(self) -> None:
        try:
            self.value = self.fn()
        except BaseException as e:  # noqa: BLE001 - raised again in the trainer's thread
            self.error = e
        self.finished = True

    def result(self) -> Any:
        self.join()
        if self.error is not None:
            raise self.error
        return self.value


class RolloutWorker:
    def __init__(self, backend: Backend, policy: torch.nn.Module, tokenizer: Any, rows: list[dict],
                 sampling: SamplingParams, num_generations: int, system_prompt: str | None, seed: int):
        self.backend, self.tokenizer, self.rows = backend, tokenizer, rows
        self.sampling = with_stops(sampling, tokenizer, policy)
        self.num_generations, self.system_prompt, self.seed = num_generations, system_prompt, seed
        self.copy = None if backend.holds_weights else _frozen_copy(policy)
        self.threads = _split_threads() if next(policy.parameters()).device.type == "cpu" else None
        self.pending: Batch | None = None

    @property
    def stops(self) -> list[int]:
        return self.sampling.stop_token_ids

    def submit(self, step: int, indices: list[int], policy: torch.nn.Module, version: int) -> None:
        """Start generating step ``step``'s batch from ``policy`` as it is now (version ``version``)."""
        assert self.pending is None, "one batch in flight at a time"
        if self.copy is not None:
            self.copy.load_state_dict(policy.state_dict())
            model = self.copy
        else:
            self.backend.sync_weights(policy, version)
            model = policy
        prompts = self._prompts(indices)
        sampling = replace(self.sampling, seed=self._seed(step))
        threads = self.threads

        def generate() -> list[Generation]:
            if threads:
                torch.set_num_threads(threads[0])
            return run_backend(self.backend, model, self.tokenizer, prompts.ids, sampling)
        job = _Job(generate)
        if threads:
            torch.set_num_threads(threads[1])
        self.pending = Batch(step, indices, version, prompts, job=job)

    def wait(self) -> None:
        """Until the batch in flight is generated (it stays pending); the trainer has every thread again."""
        if self.pending is not None and self.pending.gens is None:
            self.pending.gens = self.pending.job.result()
            self.pending.job = None
            self._give_back()

    def take(self, step: int) -> Batch | None:
        """Step ``step``'s batch, once generated; None when the worker holds no batch for that step."""
        if self.pending is None or self.pending.step != step:
            self.pending = None
            return None
        self.wait()
        batch, self.pending = self.pending, None
        return batch

    def state_dict(self) -> dict:
        """The batch in flight, generated (a checkpoint waits for it)."""
        self.wait()
        p = self.pending
        if p is None:
            return {}
        return {"step": p.step, "indices": p.indices, "version": p.version,
                "gens": [(g.prompt_ids, g.completion_ids, g.logprobs, g.truncated) for g in p.gens]}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        gens = [Generation(list(p), list(c), lp, truncated=t) for p, c, lp, t in state["gens"]]
        self.pending = Batch(state["step"], list(state["indices"]), state["version"],
                             self._prompts(state["indices"]), gens)

    def close(self) -> None:
        """Forget the batch in flight (a stage's last step hands none over; a failed one need not wait)."""
        self.pending = None
        self._give_back()

    def _give_back(self) -> None:
        if self.threads:
            torch.set_num_threads(sum(self.threads))

    def _prompts(self, indices: list[int]) -> Prompts:
        return encode_prompts(self.tokenizer, [self.rows[k] for k in indices], self.num_generations,
                              self.system_prompt)

    def _seed(self, step: int) -> int:
        return (self.seed * 1_000_003 + step) % 2**63


def _frozen_copy(policy: torch.nn.Module) -> torch.nn.Module:
    """The policy's twin for generation: same modules (adapters too), no gradients, eval mode."""
    twin = copy.deepcopy(policy)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin.eval()


def _split_threads() -> tuple[int, int] | None:
    """(worker, trainer) intra-op threads while a batch is generated; None with a single thread."""
    total = torch.get_num_threads()
    if total < 2:
        return None
    worker = total // 2
    return worker, total - worker
