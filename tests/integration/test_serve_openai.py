"""`frl serve` as the official openai client expects it: streaming, log-probs, echo, n, seeds, stops, errors, keys.

A real server on 127.0.0.1 serving the tiny GPT-2 (one token per character); values are checked against the
model's own forward pass.
"""
from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import openai
import pytest
import torch

from frl_plugins.serve.commands import load_local
from frl_plugins.serve.server import ServerThread, build_app

PROMPT = "12+34="


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_local(str(tiny_model_dir))


@pytest.fixture(scope="module")
def server(tiny):
    with ServerThread(build_app(*tiny, "tiny", batch_wait_ms=1)) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)


def http(method: str, url: str, body: bytes | dict | None = None, headers: dict | None = None) -> tuple[int, str]:
    """A raw request (no client library in the way): the status and the body text."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def log_softmax_of(tiny, text: str) -> tuple[list[int], torch.Tensor]:
    """Token ids of ``text`` and the model's log-softmax at every position (row i predicts token i+1)."""
    model, tok = tiny
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return ids, torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)


def test_streamed_completion_deltas_reassemble_the_greedy_text(client):
    whole = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, temperature=0)
    chunks = list(client.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    pieces = [c for c in chunks if c.choices]
    assert len(pieces) > 1 and "".join(c.choices[0].text for c in pieces) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in pieces][-1] == whole.choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in pieces[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == whole.usage.model_dump()
    assert whole.usage.prompt_tokens == len(PROMPT) and whole.usage.completion_tokens == 12


def test_streamed_choices_of_several_prompts_and_n_reassemble_by_index(client):
    args = dict(model="tiny", prompt=[PROMPT, "5+5="], max_tokens=6, temperature=1.0, n=2, seed=3)
    whole = client.completions.create(**args)
    texts: dict[int, str] = {}
    finished = set()
    for chunk in client.completions.create(**args, stream=True):
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
            if c.finish_reason:
                finished.add(c.index)
    assert texts == {c.index: c.text for c in whole.choices} and finished == {0, 1, 2, 3}


def test_streamed_chat_deltas_reassemble_with_sync_and_async_clients(server, client):
    messages = [{"role": "system", "content": "add"}, {"role": "user", "content": "1+2="}]
    whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0)
    sync = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0,
                                               stream=True))
    assert sync[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in sync) == whole.choices[0].message.content
    assert sync[-1].choices[0].finish_reason == whole.choices[0].finish_reason == "length"

    async def go():
        aclient = openai.AsyncOpenAI(base_url=server.url, api_key="x", max_retries=0)
        streams = [await aclient.chat.completions.create(model="tiny", messages=messages, max_tokens=10,
                                                         temperature=0, stream=True) for _ in range(3)]

        async def text(s):
            return "".join([c.choices[0].delta.content or "" async for c in s])
        out = await asyncio.gather(*(text(s) for s in streams))
        await aclient.close()
        return out
    assert asyncio.run(go()) == [whole.choices[0].message.content] * 3


def test_completion_logprobs_are_the_models_log_softmax(tiny, client):
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=6, temperature=0, logprobs=3)
    c = r.choices[0]
    lp = c.logprobs
    assert "".join(lp.tokens) == c.text and len(lp.tokens) == 6
    assert lp.text_offset == list(range(6))  # one character per token
    _, logp = log_softmax_of(tiny, PROMPT + c.text)
    ids = tiny[1](PROMPT + c.text, add_special_tokens=False)["input_ids"]
    for k, (token_lp, top) in enumerate(zip(lp.token_logprobs, lp.top_logprobs)):
        row = logp[len(PROMPT) - 1 + k]
        assert token_lp == pytest.approx(row[ids[len(PROMPT) + k]].item(), abs=1e-5)
        assert token_lp == pytest.approx(row.max().item(), abs=1e-5)  # greedy: the likeliest token
        best = torch.topk(row, 3)
        assert len(top) == 3 and sorted(top.values()) == pytest.approx(sorted(best.values.tolist()), abs=1e-5)


def test_chat_logprobs_and_top_logprobs_in_the_chat_shape(tiny, client):
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "7+8="}], max_tokens=5,
                                       temperature=0, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    text = r.choices[0].message.content
    assert "".join(e.token for e in content) == text and len(content) == 5
    # the chat endpoint renders with the model's chat template, as training does
    prompt = tiny[1].apply_chat_template([{"role": "user", "content": "7+8="}], add_generation_prompt=True,
                                         tokenize=False)
    # score the served tokens themselves (the untrained model may emit newlines, which tokenizing the text
    # again would not give back)
    model, tok = tiny
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    n = len(ids)
    ids += tok.convert_tokens_to_ids([e.token for e in content])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    for k, e in enumerate(content):
        row = logp[n - 1 + k]
        assert e.logprob == pytest.approx(row.max().item(), abs=1e-5)
        assert e.bytes == list(e.token.encode())
        assert [t.logprob for t in e.top_logprobs] == pytest.approx(torch.topk(row, 2).values.tolist(), abs=1e-5)
        assert e.top_logprobs[0].token == e.token
    plain = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "7+8="}], max_tokens=5,
                                           temperature=0, logprobs=True)
    assert all(e.top_logprobs == [] for e in plain.choices[0].logprobs.content)


def test_streamed_logprobs_add_up_to_the_whole_answer(client):
    args = dict(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0, logprobs=2)
    whole = client.completions.create(**args).choices[0].logprobs
    parts = [c.choices[0].logprobs for c in client.completions.create(**args, stream=True) if c.choices]
    assert sum((p.tokens for p in parts), []) == whole.tokens
    assert sum((p.token_logprobs for p in parts), []) == whole.token_logprobs
    assert sum((p.text_offset for p in parts), []) == whole.text_offset


def test_echo_returns_the_prompt_and_its_token_logprobs(tiny, client):
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=3, temperature=0, echo=True, logprobs=1)
    c = r.choices[0]
    assert c.text.startswith(PROMPT) and len(c.text) == len(PROMPT) + 3
    lp = c.logprobs
    assert lp.tokens == list(c.text) and lp.text_offset == list(range(len(c.text)))
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # the first token has no context
    ids, logp = log_softmax_of(tiny, c.text)
    for i in range(1, len(ids)):
        assert lp.token_logprobs[i] == pytest.approx(logp[i - 1, ids[i]].item(), abs=1e-5)
    scored = client.completions.create(model="tiny", prompt=[PROMPT, "9+9="], max_tokens=0, echo=True, logprobs=0)
    assert [x.text for x in scored.choices] == [PROMPT, "9+9="]  # max_tokens 0: score the prompt only
    assert scored.choices[0].logprobs.token_logprobs == lp.token_logprobs[: len(PROMPT)]
    assert scored.usage.completion_tokens == 0
    plain = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=3, temperature=0, echo=True)
    assert plain.choices[0].text == c.text and plain.choices[0].logprobs is None


def test_n_choices_seeds_and_token_prompts(tiny, client):
    args = dict(model="tiny", max_tokens=10, temperature=1.0, n=3)
    a = client.completions.create(prompt=PROMPT, seed=7, **args)
    b = client.completions.create(prompt=PROMPT, seed=7, **args)
    other = client.completions.create(prompt=PROMPT, seed=8, **args)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.text for c in a.choices] == [c.text for c in b.choices] != [c.text for c in other.choices]
    assert len({c.text for c in a.choices}) == 3  # sampled, not repeated
    two = client.completions.create(model="tiny", prompt=[PROMPT, "5+5="], max_tokens=4, temperature=0, n=2)
    assert [c.index for c in two.choices] == [0, 1, 2, 3] and two.choices[0].text == two.choices[1].text
    ids = tiny[1](PROMPT, add_special_tokens=False)["input_ids"]
    by_ids = client.completions.create(model="tiny", prompt=ids, max_tokens=4, temperature=0, echo=True)
    assert by_ids.choices[0].text == PROMPT + two.choices[0].text  # token ids echo as their text


def test_stop_strings_cut_the_text_streamed_or_not(client):
    full = client.completions.create(model="tiny", prompt="3+3=", max_tokens=12, temperature=0).choices[0].text
    stop = full[4:6]
    cut = full[: full.find(stop)]
    r = client.completions.create(model="tiny", prompt="3+3=", max_tokens=12, temperature=0, stop=[stop, "@@@"])
    assert r.choices[0].text == cut and r.choices[0].finish_reason == "stop"
    streamed = [c.choices[0] for c in client.completions.create(model="tiny", prompt="3+3=", max_tokens=12,
                                                                temperature=0, stop=stop, stream=True)]
    assert "".join(c.text for c in streamed) == cut and streamed[-1].finish_reason == "stop"


def test_the_models_eos_ids_end_a_reply(tiny):
    model, tok = tiny
    greedy = "=K"  # what the tiny model says after 12+34= (checked below); make "K" an EOS of the model
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [tok.eos_token_id, tok.convert_tokens_to_ids("K")]
    try:
        with ServerThread(build_app(model, tok, "tiny", batch_wait_ms=1)) as s:
            c = openai.OpenAI(base_url=s.url, api_key="x", max_retries=0)
            r = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=10, temperature=0)
    finally:
        model.generation_config.eos_token_id = saved
    assert r.choices[0].text == greedy[:1] and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 2  # "=" and the stop token


def test_chat_uses_the_tokenizers_template_and_a_refusing_template_is_a_400(tiny, tiny_model_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = ("{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system turns') }}"
                         "{% endif %}[{{ m.role }}]{{ m.content }}{% endfor %}{% if add_generation_prompt %}>"
                         "{% endif %}")
    with ServerThread(build_app(tiny[0], tok, "tiny", batch_wait_ms=1)) as s:
        c = openai.OpenAI(base_url=s.url, api_key="x", max_retries=0)
        r = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "1+1="}], max_tokens=2)
        assert r.usage.prompt_tokens == len("[user]1+1=>")
        with pytest.raises(openai.BadRequestError, match="chat template refused them.*no system turns"):
            c.chat.completions.create(model="tiny", messages=[{"role": "system", "content": "s"}], max_tokens=2)


def test_logprobs_stay_raw_when_the_models_generation_config_reshapes_sampling(tiny):
    model, tok = tiny
    saved = model.generation_config.repetition_penalty
    model.generation_config.repetition_penalty = 5.0   # no OpenAI parameter for it: it applies, as in vLLM
    try:
        with ServerThread(build_app(model, tok, "tiny", batch_wait_ms=1)) as s:
            c = openai.OpenAI(base_url=s.url, api_key="x", max_retries=0)
            r = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=6, temperature=0, logprobs=1)
    finally:
        model.generation_config.repetition_penalty = saved
    text, lp = r.choices[0].text, r.choices[0].logprobs
    assert text != "=KKKKK"  # the penalty changed the greedy reply (without it: "=KKKKK")
    ids, logp = log_softmax_of(tiny, PROMPT + text)
    for k, token_lp in enumerate(lp.token_logprobs):
        assert token_lp == pytest.approx(logp[len(PROMPT) - 1 + k, ids[len(PROMPT) + k]].item(), abs=1e-5)


def test_an_unknown_model_is_a_404_in_openai_shape(server, client):
    for call in (lambda: client.completions.create(model="gpt-4", prompt="1", max_tokens=1),
                 lambda: client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "1"}]),
                 lambda: client.models.retrieve("gpt-4")):
        with pytest.raises(openai.NotFoundError) as e:
            call()
        assert e.value.body == {"message": "the model 'gpt-4' does not exist; this server serves 'tiny'",
                                "type": "invalid_request_error", "param": "model", "code": "model_not_found"}
    assert client.models.retrieve("tiny").id == "tiny"
    status, text = http("GET", server.url + "/nowhere")
    assert status == 404 and set(json.loads(text)["error"]) == {"message", "type", "param", "code"}
    assert http("GET", server.url + "/completions")[0] == 405


def test_every_route_needs_the_key_when_one_is_set(tiny):
    routes = [("GET", "/models"), ("GET", "/models/tiny"), ("GET", "/frl/stats"), ("POST", "/completions"),
              ("POST", "/chat/completions"), ("GET", "/nowhere")]
    with ServerThread(build_app(*tiny, "tiny", api_key="k-1", batch_wait_ms=1)) as s:
        for method, path in routes:
            for headers in ({}, {"Authorization": "Bearer k-2"}, {"Authorization": "k-1"}):
                status, text = http(method, s.url + path, {} if method == "POST" else None, headers)
                assert status == 401, (method, path, headers)
                assert json.loads(text)["error"]["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=s.url, api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=s.url, api_key="k-1", max_retries=0)
        assert [m.id for m in good.models.list().data] == ["tiny"]
        assert good.completions.create(model="tiny", prompt="1", max_tokens=1).choices[0].finish_reason


BAD = [
    (b"{not json", "invalid_json"),
    (b"[1, 2]", "invalid_json"),
    ({"prompt": "1"}, "model"),
    ({"model": "tiny"}, "prompt"),
    ({"model": "tiny", "prompt": 5}, "prompt"),
    ({"model": "tiny", "prompt": ""}, "prompt"),
    ({"model": "tiny", "prompt": [[1, 10 ** 6]]}, "prompt"),
    ({"model": "tiny", "prompt": "1", "temperature": 5}, "temperature"),
    ({"model": "tiny", "prompt": "1", "top_p": 0}, "top_p"),
    ({"model": "tiny", "prompt": "1", "n": 0}, "n"),
    ({"model": "tiny", "prompt": "1", "max_tokens": "x"}, "max_tokens"),
    ({"model": "tiny", "prompt": "1", "max_tokens": 0}, "max_tokens"),
    ({"model": "tiny", "prompt": "1", "logprobs": 50}, "logprobs"),
    ({"model": "tiny", "prompt": "1", "stop": [3]}, "stop"),
    ({"model": "tiny", "prompt": "1", "seed": "x"}, "seed"),
    ({"model": "tiny", "prompt": "1", "stream_options": {"include_usage": True}}, "stream_options"),
    ({"model": "tiny", "prompt": "1", "echo": "yes"}, "echo"),
    ({"model": "tiny", "prompt": "1", "best_of": 3}, "best_of"),
    ({"model": "tiny", "prompt": "1", "logit_bias": {"5": 10}}, "logit_bias"),
    ({"model": "tiny", "prompt": "1", "max_tokens": 100}, "max_tokens"),   # past the context of 64
]
BAD_CHAT = [
    ({"model": "tiny"}, "messages"),
    ({"model": "tiny", "messages": []}, "messages"),
    ({"model": "tiny", "messages": ["hi"]}, "messages[0]"),
    ({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "1"}], "top_logprobs": 2}, "top_logprobs"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "1"}], "response_format": {"type": "json_object"}},
     "response_format"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "1"}], "tools": [{"type": "function"}]}, "tools[0]"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "1"}], "tool_choice": "required"}, "tool_choice"),
]


@pytest.mark.parametrize("route,body,param", [("/completions", b, p) for b, p in BAD] +
                         [("/chat/completions", b, p) for b, p in BAD_CHAT])
def test_bad_requests_are_400s_naming_the_parameter(server, route, body, param):
    status, text = http("POST", server.url + route, body)
    assert status == 400, text
    err = json.loads(text)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    assert param in (err["param"], err["code"]) and "Traceback" not in text


def test_the_client_sees_a_400_as_bad_request(client):
    with pytest.raises(openai.BadRequestError, match="top_p"):
        client.completions.create(model="tiny", prompt="1", top_p=1.5)


def test_a_failure_while_generating_is_a_500_or_a_stream_error_event_and_the_server_goes_on(tiny):
    app = build_app(*tiny, "tiny", batch_wait_ms=1)
    batcher = app.state.batcher
    real = batcher._sample

    def broken(rows):  # fault injection: generation itself fails (out of memory, a bad kernel...)
        raise RuntimeError("CUDA out of memory (injected)")
    with ServerThread(app) as s:
        c = openai.OpenAI(base_url=s.url, api_key="x", max_retries=0)
        batcher._sample = broken
        with pytest.raises(openai.InternalServerError, match="generation failed: RuntimeError: CUDA out of memory"):
            c.completions.create(model="tiny", prompt=PROMPT, max_tokens=3)
        with pytest.raises(openai.APIError, match="generation failed"):
            list(c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "1"}], max_tokens=3,
                                           stream=True))
        batcher._sample = real
        assert c.completions.create(model="tiny", prompt=PROMPT, max_tokens=3).choices[0].finish_reason == "length"


def test_a_client_that_leaves_a_stream_stops_its_generation(tmp_path):
    from feedback_rl.modeling.tiny import build_tiny_gpt2
    model, tok = load_local(str(build_tiny_gpt2(tmp_path / "long", seed=0, n_positions=1024)))
    app = build_app(model, tok, "long", batch_wait_ms=1)
    stats = app.state.batcher.stats
    with ServerThread(app) as s:
        c = openai.OpenAI(base_url=s.url, api_key="x", max_retries=0)
        stream = c.completions.create(model="long", prompt=PROMPT, max_tokens=1000, temperature=0, stream=True)
        next(iter(stream))
        stream.close()
        deadline = time.monotonic() + 120
        while stats["generated_tokens"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert 0 < stats["generated_tokens"] < 1000
