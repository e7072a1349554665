"""One hostile request costs `frl serve` little: a body over the cap is a 413, a prompt over the context is refused
after tokenizing a slice of it, and a slow request never holds the event loop from another client.

Real servers on 127.0.0.1 serving the tiny GPT-2 (a context of 64 tokens); every request loop is bounded.
"""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from frl_plugins.serve import engine
from frl_plugins.serve.commands import load_local
from frl_plugins.serve.server import ServerThread, build_app

PROMPT_MB = 3.5  # under the default cap of 4 MiB, thousands of times the context: only the context refuses it


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_local(str(tiny_model_dir))


def post(url: str, body: bytes, timeout: float = 60) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def completion(prompt: str | list, **extra: object) -> bytes:
    return json.dumps({"model": "tiny", "prompt": prompt, "max_tokens": 1, **extra}).encode()


def test_a_body_over_the_cap_is_a_413_in_openai_shape_declared_or_chunked(tiny):
    with ServerThread(build_app(*tiny, "tiny", max_body_mb=0.01)) as server:
        started = time.monotonic()
        status, body = post(server.url + "/completions", completion("1" * 20_000))
        assert status == 413 and time.monotonic() - started < 5
        assert body["error"]["code"] == "request_too_large" and "over this server's limit of 10485 bytes" in \
            body["error"]["message"], body
        # no Content-Length to trust: the stream is counted as it arrives
        parts = urllib.parse.urlsplit(server.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        conn.request("POST", "/v1/completions", body=iter([completion("2" * 6_000), b" " * 6_000]),
                     headers={"Content-Type": "application/json"}, encode_chunked=True)
        answer = conn.getresponse()
        assert answer.status == 413 and json.loads(answer.read())["error"]["code"] == "request_too_large"
        conn.close()
        status, _ = post(server.url + "/completions", completion("1+1="))
        assert status == 200  # a body under the cap is served as before


def test_a_prompt_over_the_context_is_refused_after_tokenizing_only_a_slice(tiny, monkeypatch):
    encoded: list[int] = []
    real = engine.Text.encode
    monkeypatch.setattr(engine.Text, "encode", lambda self, text: encoded.append(len(text)) or real(self, text))
    huge = "1" * int(PROMPT_MB * 2**20)
    with ServerThread(build_app(*tiny, "tiny")) as server:
        started = time.monotonic()
        status, body = post(server.url + "/completions", completion(["1+1=", huge]))
        took = time.monotonic() - started
        chat_status, chat = post(server.url + "/chat/completions", json.dumps(
            {"model": "tiny", "messages": [{"role": "user", "content": huge}]}).encode())
    assert status == 400 and body["error"]["param"] == "prompt", body
    assert "more than the model's context of 64" in body["error"]["message"]
    assert chat_status == 400 and chat["error"]["param"] == "messages", chat
    assert encoded and max(encoded) < 10_000, encoded  # a slice of a few hundred characters, never the whole
    assert took < 10, took  # tokenizing it whole took over 15 s on 2 threads


def test_a_concurrent_models_request_answers_promptly_while_a_big_request_is_processed(tiny, monkeypatch):
    # a tokenizer slow on purpose on one prompt (as a real one is on a few MiB of text): the time it takes
    # must not be taken from the other clients
    real = engine.Text.encode

    def slow(self, text: str) -> list[int]:
        if text.startswith("slow"):
            time.sleep(2.0)
        return real(self, text)

    monkeypatch.setattr(engine.Text, "encode", slow)
    big = completion("slow 1+1=")
    with ServerThread(build_app(*tiny, "tiny")) as server:
        answered: dict = {}

        def send_big() -> None:
            answered["result"] = post(server.url + "/completions", big)
            answered["at"] = time.monotonic()

        worker = threading.Thread(target=send_big)
        worker.start()
        waits = []
        try:
            time.sleep(0.5)  # the big request is being read, parsed and tokenized
            for _ in range(6):  # bounded: 6 requests, about 1.5 s, all while the big one is in flight
                started = time.monotonic()
                with urllib.request.urlopen(server.url + "/models", timeout=30) as r:
                    assert r.status == 200
                waits.append(time.monotonic() - started)
                time.sleep(0.2)
            last = time.monotonic()
        finally:
            worker.join(60)
    assert max(waits) < 0.5, waits  # with tokenizing on the event loop, the first waited 1.5 s
    assert answered["result"][0] == 200 and answered["at"] > last, "the big request ended before the others"


def test_frl_serve_takes_max_body_mb(tiny_model_dir):
    frl = os.path.join(os.path.dirname(sys.executable), "frl")
    proc = subprocess.Popen([frl, "serve", str(tiny_model_dir), "--port", "0", "--max-body-mb", "0.001",
                             "--model-name", "tiny"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        line = proc.stdout.readline()  # "serving 'tiny' on http://127.0.0.1:PORT/v1 (cpu)"
        assert "serving 'tiny' on " in line, line + (proc.stdout.read() if proc.poll() is not None else "")
        url = line.split(" on ", 1)[1].split()[0]
        for _ in range(100):  # bounded: the socket is bound before the line, served a moment after
            try:
                urllib.request.urlopen(url + "/models", timeout=5).close()
                break
            except urllib.error.URLError:
                time.sleep(0.1)
        status, body = post(url + "/completions", completion("1" * 2_000))
        assert status == 413 and "limit of 1048 bytes" in body["error"]["message"], body
        assert post(url + "/completions", completion("1+1="))[0] == 200
    finally:
        proc.terminate()
        proc.wait(10)
