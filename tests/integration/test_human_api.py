"""The labeling web app over real HTTP (uvicorn on 127.0.0.1, an ephemeral port)."""
from __future__ import annotations

import json
import sqlite3
import threading
import urllib.request
from pathlib import Path

import pytest

from frl_plugins.rewards.human.annotator import Client, decide, run
from frl_plugins.rewards.human.app import spawn
from frl_plugins.rewards.human.store import LabelStore


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    db = tmp_path_factory.mktemp("labels") / "labels.sqlite"
    store = LabelStore(db)
    proc, url = spawn(db)
    yield store, url
    proc.terminate()
    proc.wait(10)


def raw(url, path, body=None, token=None, method=None, data=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    payload = data if data is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url + path, data=payload, headers=headers,
                                 method=method or ("GET" if payload is None else "POST"))
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def count_labels(store):
    return store._conn().execute("SELECT COUNT(*) FROM labels").fetchone()[0]


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/api/next", "/api/stats", "/nowhere"])
def test_every_page_and_api_call_needs_a_token(server, path):
    store, url = server
    assert raw(url, path)[0] == 401
    assert raw(url, path, token="not-a-token")[0] == 401


def test_posts_without_a_token_are_401_and_store_nothing(server):
    store, url = server
    item = store.enqueue("pairwise", "1+1=", "2", "3")
    before = count_labels(store)
    assert raw(url, "/api/label", {"item_id": item, "choice": "a"})[0] == 401
    assert count_labels(store) == before


def test_page_is_served_with_a_strict_content_security_policy(server):
    store, url = server
    token = store.add_annotator("page")
    status, text, headers = raw(url, f"/?token={token}")
    assert status == 200 and "<script src=\"/static/app.js\"" in text
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frl_token=" in headers["set-cookie"] and "httponly" in headers["set-cookie"].lower()


def test_label_roundtrip_is_idempotent_and_changes_go_to_history(server):
    store, url = server
    token = store.add_annotator("alice")
    item = store.enqueue("pairwise", "2+2=", "4", "5")
    c = Client(url, token)
    assert c.call("/api/label", {"item_id": item, "choice": "a"}) == (201, {"status": "stored"})
    assert c.call("/api/label", {"item_id": item, "choice": "a"}) == (200, {"status": "unchanged"})
    assert c.call("/api/label", {"item_id": item, "choice": "b"}) == (200, {"status": "changed"})
    rows = store._conn().execute("SELECT choice FROM labels WHERE item_id=?", (item,)).fetchall()
    assert [r[0] for r in rows] == ["b"]
    assert store.history()[-1]["old_choice"] == "a"


@pytest.mark.parametrize("body,status", [
    ({"item_id": 10**9, "choice": "a"}, 404),                 # unknown item
    ({"item_id": 2**63, "choice": "a"}, 422),                 # too large for SQLite (was a plain-text 500)
    ({"item_id": 10**30, "choice": "a"}, 422),
    ({"item_id": 0, "choice": "a"}, 422),
    ({"item_id": -(2**70), "choice": "a"}, 422),
    ({"item_id": 1.5, "choice": "a"}, 422),
    ({"item_id": "1", "choice": "a"}, 422),                   # wrong type
    ({"item_id": True, "choice": "a"}, 422),
    ({"choice": "a"}, 422),                                   # missing field
    ({"item_id": "ITEM", "choice": "maybe"}, 422),            # wrong choice
    ({"item_id": "ITEM", "choice": 1}, 422),
    ([1, 2], 400),                                            # not an object
    (b"{not json", 400),                                      # malformed
    (b"x" * 20000, 413),                                      # too large
    (b"[" * 5000 + b"]" * 5000, 400),                         # nested past Python's recursion limit (was a 500)
    (b'{"item_id": ' + b"1" * 5000 + b', "choice": "a"}', 400),  # past Python's digit limit
])
def test_bad_input_is_4xx_with_a_message_and_stores_nothing(server, body, status):
    store, url = server
    token = store.add_annotator("mallory", rotate=store.has_annotator("mallory"))
    item = store.enqueue("pairwise", "3+3=", "6", "7")
    if isinstance(body, dict) and body.get("item_id") == "ITEM":
        body = {**body, "item_id": item}
    before = count_labels(store)
    if isinstance(body, bytes):
        got, text, _ = raw(url, "/api/label", token=token, data=body)
    else:
        got, text, _ = raw(url, "/api/label", body, token=token)
    assert got == status
    assert json.loads(text)["error"]
    assert count_labels(store) == before


@pytest.mark.parametrize("item_id,status", [(2**63, 422), (10**30, 422), (2**63 - 1, 404), ("1", 422)])
def test_a_bad_id_to_skip_is_4xx_json(server, item_id, status):
    store, url = server
    token = store.add_annotator("skip-mallory", rotate=store.has_annotator("skip-mallory"))
    got, text, headers = raw(url, "/api/skip", {"item_id": item_id}, token=token)
    assert got == status and headers["content-type"] == "application/json", text
    assert "item" in json.loads(text)["error"]


def test_a_rotated_token_works_and_the_old_one_is_refused(server, tmp_path):
    import subprocess
    import sys
    store, url = server
    old = store.add_annotator("rotating")
    assert raw(url, "/api/stats", token=old)[0] == 200
    done = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "label", "add-annotator", "rotating",
                           "--db", str(store.path), "--rotate"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    new = done.stdout.strip()
    assert "the old one no longer works" in done.stderr
    assert raw(url, "/api/stats", token=new)[0] == 200
    assert raw(url, "/api/stats", token=old)[0] == 401


def test_next_serves_items_and_skip_moves_on(server):
    store, url = server
    token = store.add_annotator("skipper")
    c = Client(url, token)
    first = c.call("/api/next")[1]["item"]
    assert c.call("/api/skip", {"item_id": first["id"]}) == (200, {"status": "skipped"})
    second = c.call("/api/next")[1]
    assert second["item"] is None or second["item"]["id"] != first["id"]
    assert second["pending"] >= 1 and second["annotator"] == "skipper"


def test_simulated_annotator_prefers_the_correct_sum():
    assert decide({"task": "pairwise", "prompt": "12+30=", "a": "41", "b": "42"}) == "b"
    assert decide({"task": "pairwise", "prompt": "12+30=", "a": "40", "b": "x"}) == "a"   # closer wins
    assert decide({"task": "pairwise", "prompt": "12+30=", "a": "41", "b": "43"}) == "tie"
    assert decide({"task": "thumbs", "prompt": "12+30=", "a": "42"}) == "up"
    assert decide({"task": "rating", "prompt": "12+30=", "a": "45"}) == "4"


def test_load_16_clients_1000_labels_exactly_1000_rows(tmp_path):
    db = tmp_path / "load.sqlite"
    store = LabelStore(db)
    store.enqueue_many([("pairwise", f"{k}+1=", str(k + 1), str(k), {}) for k in range(1000)])
    tokens = [store.add_annotator(f"client{k}") for k in range(16)]
    proc, url = spawn(db)
    try:
        counts = [0] * 16

        def worker(k):
            counts[k] = run(url, tokens[k], idle_exit=1.0)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    finally:
        proc.terminate()
        proc.wait(10)
    db2 = sqlite3.connect(db)
    assert db2.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == 1000
    assert db2.execute("SELECT COUNT(DISTINCT item_id) FROM labels").fetchone()[0] == 1000
    assert sum(counts) == 1000
    assert db2.execute("SELECT COUNT(*) FROM labels WHERE choice != 'a'").fetchone()[0] == 0


DOC = Path(__file__).resolve().parents[2] / "docs" / "labeling-api.md"


def documented_json(route: str) -> dict:
    """The example answer under a route's heading in docs/labeling-api.md."""
    section = DOC.read_text().split(f"### `{route}`", 1)[1]
    return json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])


def test_the_docs_name_every_route_and_show_the_answers_the_server_gives(server, tmp_path):
    from frl_plugins.rewards.human.app import create_app
    doc = DOC.read_text()
    routes = [(sorted(r.methods - {"HEAD"})[0], r.path) for r in create_app(tmp_path / "l.sqlite").routes]
    assert len(routes) == 6
    assert [f"`{m} {p}`" for m, p in routes if f"`{m} {p}`" not in doc] == []
    store, url = server
    token = store.add_annotator("reader")
    store.enqueue("pairwise", "9+9=", "18", "17")
    status, text, _ = raw(url, "/api/next", token=token)
    got, shown = json.loads(text), documented_json("GET /api/next")
    assert status == 200 and set(got) == set(shown) and set(got["item"]) == set(shown["item"])
    status, text, _ = raw(url, "/api/stats", token=token)
    assert status == 200 and set(json.loads(text)) == set(documented_json("GET /api/stats"))
    root = DOC.parents[1]
    assert "(labeling-api.md)" in (root / "docs" / "plugins.md").read_text()
    assert "(docs/labeling-api.md)" in (root / "README.md").read_text()
