"""Whether the hub can be reached is known at once: an offline setting, a refused or a silent endpoint.
(tests/integration/test_hub_offline_cli.py runs `frl train` with hub ids offline.)"""
import socket
import time

import pytest

from feedback_rl.modeling import hub

REFUSED = "http://127.0.0.1:9"   # nothing listens on the discard port: the connection is refused


@pytest.fixture
def silent_server():
    """A loopback endpoint that accepts connections and never answers (a network that drops packets)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def test_the_offline_setting_is_named_and_each_library_has_its_own(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.offline_reason() == "HF_HUB_OFFLINE=1 is set"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", REFUSED)   # so that no setting means: ask the network
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert hub.offline_reason("dataset") == "HF_DATASETS_OFFLINE=1 is set"
    assert hub.offline_reason("model").startswith("no network: ")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    assert hub.offline_reason("model") == "TRANSFORMERS_OFFLINE=1 is set"


def test_an_endpoint_that_never_answers_is_given_up_on_in_about_a_second(monkeypatch, silent_server):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", silent_server)
    start = time.monotonic()
    reason = hub.offline_reason()
    took = time.monotonic() - start
    assert reason == f"no network: {silent_server} cannot be reached: timed out"
    assert hub.PROBE_TIMEOUT_S - 0.1 <= took < hub.PROBE_TIMEOUT_S + 1.5, took


def test_a_refused_endpoint_is_known_at_once(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", REFUSED)
    start = time.monotonic()
    assert hub.offline_reason() == f"no network: {REFUSED} cannot be reached: Connection refused"
    assert time.monotonic() - start < 1.0


def test_a_path_that_is_neither_local_nor_a_hub_id_says_so():
    with pytest.raises(hub.UserError, match=r"^model.path: 'runs/nope/final' is no local file or folder, nor a "
                                            r"hub id \(namespace/name\)$"):
        hub.require_model("runs/nope/final")
