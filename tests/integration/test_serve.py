"""`frl serve` over real HTTP on 127.0.0.1 with the official openai client, on the tiny model."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import openai
import pytest

from feedback_rl import PluginContext
from feedback_rl.modeling.tiny import build_tiny_gpt2
from frl_plugins.rewards.judge import JudgeSource
from frl_plugins.serve.commands import load_local
from frl_plugins.serve.server import ServerThread, build_app, chat_prompt


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="module")
def served(tiny_dir):
    model, tok = load_local(str(tiny_dir))
    app = build_app(model, tok, "tiny", max_batch=16, batch_wait_ms=50)
    with ServerThread(app) as server:
        server.app = app
        yield server


def test_chat_and_completions_answer_in_openai_shapes(served):
    client = openai.OpenAI(base_url=served.url, api_key="x")
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "12+34="}],
                                          max_tokens=5, temperature=0)
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].finish_reason in ("stop", "length")
    assert 0 < chat.usage.completion_tokens <= 5
    # the tiny model's own chat template, one token per character
    assert chat.usage.prompt_tokens == len("<|user|>\n12+34=\n<|assistant|>\n")
    comp = client.completions.create(model="tiny", prompt=["12+34=", "50+50="], max_tokens=4, temperature=0)
    assert len(comp.choices) == 2 and all(isinstance(c.text, str) for c in comp.choices)
    again = client.completions.create(model="tiny", prompt="12+34=", max_tokens=4, temperature=0)
    assert again.choices[0].text == comp.choices[0].text  # greedy is deterministic
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_concurrent_requests_are_batched_into_fewer_generate_calls(served):
    before = dict(served.app.state.batcher.stats)

    async def go():
        client = openai.AsyncOpenAI(base_url=served.url, api_key="x")
        out = await asyncio.gather(*(client.completions.create(model="tiny", prompt=f"{10 + k}+11=", max_tokens=3,
                                                               temperature=0) for k in range(12)))
        await client.close()
        return out
    results = asyncio.run(go())
    stats = served.app.state.batcher.stats
    assert len(results) == 12
    assert stats["requests"] - before["requests"] == 12
    assert stats["batches"] - before["batches"] < 12 and stats["max_batch"] > 1


def test_context_overflow_is_a_400_not_a_crash(served):
    client = openai.OpenAI(base_url=served.url, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="exceeds the model's context of 64"):
        client.completions.create(model="tiny", prompt="x" * 80, max_tokens=4)


def test_chat_prompt_uses_the_chat_template_when_there_is_one():
    class Tok:
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert not tokenize and add_generation_prompt
            return "<T>" + messages[0]["content"]
    assert chat_prompt(Tok(), [{"role": "user", "content": "hi"}]) == "<T>hi"
    assert chat_prompt(object(), [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]) == \
        "system: s\nuser: u\nassistant:"


def test_judge_scores_rollouts_through_frl_serve_on_the_tiny_model(served, tmp_path):
    from feedback_rl import Rollout
    opts = JudgeSource.Options(base_url=served.url, model="tiny", template="{prompt}{completion}", max_tokens=6,
                               temperature=0.0)
    judge = JudgeSource(opts, PluginContext(name="tinyjudge", run_dir=tmp_path))
    rollouts = [Rollout(prompt=f"{a}+1=", completion=str(a + 1), row={"prompt": f"{a}+1="}, group=a,
                        prompt_ids=[], completion_ids=[]) for a in range(10, 26)]
    try:
        scores = judge.score(rollouts)
        m = judge.metrics()
        trace = judge.explain(16)
    finally:
        judge.close()
    assert m["requests"] == 16 and m["errors"] == 0
    for s, t in zip(scores, trace):  # an untrained judge: a number when the reply holds one, else abstain
        assert s.status in ("ok", "abstain")
        assert (s.status == "ok") == any(ch.isdigit() for ch in t["reply"])
        assert s.value is None or isinstance(s.value, float)
    assert m["prompt_tokens"] == sum(len(f"<|user|>\n{r.prompt}{r.completion}\n<|assistant|>\n") for r in rollouts)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_frl_serve_command_binds_loopback_and_requires_the_api_key(tiny_dir):
    port = _free_port()
    env = {**os.environ, "TINY_SERVE_KEY": "k-123"}
    frl = os.path.join(os.path.dirname(sys.executable), "frl")
    proc = subprocess.Popen([frl, "serve", str(tiny_dir), "--port", str(port), "--api-key-env", "TINY_SERVE_KEY",
                             "--model-name", "m"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() else "timeout"
                time.sleep(0.2)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).completions.create(
                model="m", prompt="1+1=", max_tokens=2)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
        ok = openai.OpenAI(base_url=url, api_key="k-123").completions.create(model="m", prompt="1+1=", max_tokens=2)
        assert len(ok.choices) == 1
    finally:
        proc.terminate()
        proc.wait(10)
