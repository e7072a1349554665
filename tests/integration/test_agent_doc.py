"""docs/episodes.md's "Any agent program" runs as written: its agent, through the rollout endpoint serving the tiny
model with the HF backend, plays episodes whose trained ids are exactly the two replies it was given; its recipe
block validates."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from feedback_rl import PluginContext, SamplingParams
from feedback_rl.config.recipe import load
from feedback_rl.loop.agents import AgentRunner
from feedback_rl.models import context_length, load_model
from feedback_rl.modeling.tiny import build_tiny_gpt2
from feedback_rl.plugins import default

DOC = (Path(__file__).resolve().parents[2] / "docs" / "episodes.md").read_text()
SECTION = DOC[DOC.index("## Any agent program"):]


def block(lang: str) -> str:
    return re.search(rf"```{lang}\n(.*?)```", SECTION, re.S).group(1)


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    namespace: dict = {}
    exec(compile(block("python"), "docs/episodes.md", "exec"), namespace)
    # the tiny model with room for two calls (one token per character)
    model, tokenizer = load_model(str(build_tiny_gpt2(tmp_path_factory.mktemp("tiny"), n_positions=256)))
    backend = default()[1].get("backends", "hf")(default()[1].get("backends", "hf").Options(),
                                                 PluginContext("hf", tmp_path_factory.mktemp("run")))
    r = AgentRunner(namespace["solve"], backend, model, tokenizer, SamplingParams(max_new_tokens=4),
                    context=context_length(model.config),
                    timeout_s=60, wait_s=10.0)   # a batch closes when every episode has asked
    yield r, tokenizer
    r.close()


def test_the_documented_agent_trains_on_exactly_the_replies_it_was_given(runner):
    r, tokenizer = runner
    rows = [{"prompt": "12+34=", "answer": "46"}, {"prompt": "50+50=", "answer": "100"}]
    rollouts, metrics = r.play(rows, num_generations=2, version=0)
    assert [x.group for x in rollouts] == [0, 0, 1, 1]
    assert metrics["env/agent_calls_mean"] == 2.0 and metrics["env/errors"] == 0.0
    assert metrics["env/agent_backend_calls"] == 2   # 8 calls: the first four together, then the second four
    for x in rollouts:
        ep = x.episode
        assert ep["error"] is None and ep["done"] and ep["rewards"][-1] in (0.0, 1.0)
        replies = [t["content"] for t in ep["turns"] if t["role"] == "assistant"]
        assert [t["role"] for t in ep["turns"]] == ["assistant", "user", "assistant"]
        # the mask-1 ids are the two replies' sampled ids: decoded, the replies (the stop token aside)
        trained = [t for t, m in zip(x.completion_ids, x.completion_mask) if m]
        spans = [(a, b) for a, b, role, _ in ep["spans"] if role == "assistant"]
        assert sum((x.completion_ids[a:b] for a, b in spans), []) == trained
        assert [tokenizer.decode([t for t in x.completion_ids[a:b] if t != tokenizer.eos_token_id])
                for a, b in spans] == replies
        assert x.logprobs is not None and len(x.logprobs) == len(x.completion_ids)
    r.close()
    assert r.server is None


def test_the_documented_stage_validates(tmp_path):
    (tmp_path / "agents.py").write_text(block("python"))
    stage = block("yaml").replace("stages:\n", "")
    (tmp_path / "r.yaml").write_text(f"name: doc\nmodel: {{path: builtin:tiny-gpt2}}\nstages:\n{stage}")
    recipe = load(tmp_path / "r.yaml")
    assert recipe.stages[0].agent.function == "agents.py:solve"
