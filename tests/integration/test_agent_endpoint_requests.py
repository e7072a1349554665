"""What the rollout endpoint refuses, in OpenAI's error shape (a call with no session, sample settings it cannot
honour, a session whose step ended), without touching the session; and the completions route as token-in: a
session's ids extended verbatim."""
from __future__ import annotations

import openai
import pytest

from feedback_rl import PluginContext, SamplingParams
from feedback_rl.loop.agents import AgentRunner
from feedback_rl.modeling.tiny import build_tiny_gpt2
from feedback_rl.models import context_length, load_model
from feedback_rl.plugins import default

SEEN: dict = {}


def agent(row, client):
    def refused(**kw):
        try:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "1+1="}], **kw)
        except openai.APIStatusError as e:
            return e.status_code, e.body["message"]
        return None

    bare = client.with_options(default_headers={"X-Session-ID": openai.Omit()})
    try:
        bare.chat.completions.create(model="m", messages=[{"role": "user", "content": "1+1="}])
    except openai.BadRequestError as e:
        SEEN["no session"] = e.body["message"]
    SEEN["n"] = refused(n=2)
    SEEN["stop"] = refused(stop=["\n"])
    SEEN["top_logprobs"] = refused(logprobs=True, top_logprobs=3)
    try:
        client.completions.create(model="m", prompt=["1+", "2+"], max_tokens=2)
    except openai.BadRequestError as e:
        SEEN["two prompts"] = e.body["message"]
    first = client.completions.create(model="m", prompt="12+34=", max_tokens=3, extra_body={"return_token_ids": True})
    prompt, ids = first.choices[0].model_extra["prompt_token_ids"], first.choices[0].model_extra["token_ids"]
    second = client.completions.create(model="m", prompt=prompt + ids + prompt[:2], max_tokens=3)
    SEEN["completions"] = (prompt, ids, second.choices[0].model_extra["token_ids"])
    return 1.0


@pytest.fixture(scope="module")
def played(tmp_path_factory):
    model, tokenizer = load_model(str(build_tiny_gpt2(tmp_path_factory.mktemp("tiny"), n_positions=128)))
    reg = default()[1]
    hf = reg.get("backends", "hf")
    backend = hf(hf.Options(), PluginContext("hf", tmp_path_factory.mktemp("r")))
    runner = AgentRunner(agent, backend, model, tokenizer, SamplingParams(max_new_tokens=4),
                         context=context_length(model.config), timeout_s=60, wait_s=0.05)
    rollouts, metrics = runner.play([{"prompt": "x"}], num_generations=1, version=0)
    late = openai.OpenAI(base_url=runner.url, api_key="x", default_headers={"X-Session-ID": "v0-0"}, max_retries=0)
    with pytest.raises(openai.APIStatusError) as ended:
        late.chat.completions.create(model="m", messages=[{"role": "user", "content": "?"}])
    runner.close()
    return rollouts, metrics, ended.value


def test_calls_the_endpoint_cannot_honour_are_refused_in_openais_shape(played):
    _, _, ended = played
    assert SEEN["no session"].startswith("the X-Session-ID header is required")
    assert SEEN["two prompts"].startswith("prompt: one prompt per call")
    for key in ("n", "stop", "top_logprobs"):
        status, message = SEEN[key]
        assert status == 400 and message.startswith(f"{key}: not supported while training"), (key, message)
    # after its step, an episode's session is gone
    assert ended.status_code == 404 and ended.body["message"] == "X-Session-ID 'v0-0': no such episode in this step"


def test_completions_are_token_in_calls_extending_the_session(played):
    rollouts, metrics, _ = played
    prompt, first, second = SEEN["completions"]
    (r,) = rollouts
    # the refused calls before left the session as it was: the first completion opened it, the second extended it
    assert metrics["env/agent_splits"] == 0.0 and r.episode["error"] is None
    assert r.prompt_ids == prompt
    assert r.completion_ids == first + prompt[:2] + second
    assert r.completion_mask == [1] * len(first) + [0, 0] + [1] * len(second)
