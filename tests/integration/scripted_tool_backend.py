"""A backend for tests that writes a calculator episode's turns instead of sampling them (an untrained tiny model
calls no tool): the first turn calls ``calculate`` on the question's expression, the next answers with the tool's
result (every other episode one more, so a group's rewards differ). It records every generation, and the
``frl_rollouts_generated`` hook every rollout's ids and mask, to ``$FRL_SCRIPT_LOG`` (JSON lines)."""
from __future__ import annotations

import json
import os
import re

import torch

from feedback_rl import Backend, Generation, hookimpl


def _record(kind, **fields):
    with open(os.environ["FRL_SCRIPT_LOG"], "a") as f:
        f.write(json.dumps({"kind": kind, **fields}) + "\n")


class ScriptedToolBackend(Backend):
    name = "scripted_tool"

    def __init__(self, options, context):
        super().__init__(options, context)
        self.calls = 0

    def generate(self, model, tokenizer, prompt_ids, sampling):
        out = []
        for ids in prompt_ids:
            text = tokenizer.decode(ids)
            results = re.findall(r"<\|tool\|>\n(.*?)\n", text)
            if results:  # the tool answered: the answer (wrong in every other episode)
                self.calls += 1
                reply = str(int(results[-1]) + self.calls % 2)
            else:
                expression = re.findall(r"What is (.*?)\?", text)[-1]
                reply = '<tool_call>{"name": "calculate", "arguments": {"expression": "%s"}}</tool_call>' % expression
            completion = tokenizer(reply, add_special_tokens=False)["input_ids"][:sampling.max_new_tokens - 1]
            completion += [tokenizer.eos_token_id, 5, 6]  # past the stop token: the core cuts it
            _record("generation", prompt=list(ids), completion=completion[:-2])
            out.append(Generation(list(ids), completion, torch.full((len(completion),), -0.5), False))
        return out


@hookimpl
def frl_register_backends(register):
    register(ScriptedToolBackend)


@hookimpl
def frl_rollouts_generated(stage, step, rollouts):
    for r in rollouts:
        _record("rollout", step=step, prompt=r.prompt_ids, completion=r.completion_ids, mask=r.completion_mask)
