"""A simulated annotator that labels through the HTTP API, like a person in the browser would.

Its fixed preference, for prompts like ``23+45=``: the correct sum wins; when neither completion is
correct, the one numerically closer to the sum wins; equally close is a tie. Thumbs up = correct.
Rating: 5 correct, 4 off by <10, 3 off by <100, 2 a number, 1 not a number.

    python -m frl_plugins.rewards.human.annotator --url http://127.0.0.1:8765 --token T [--max N]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.request
from typing import Any

_SUM = re.compile(r"^\s*(-?\d+)\s*\+\s*(-?\d+)\s*=\s*$")


def _distance(prompt: str, completion: str) -> float:
    """How far a completion is from the correct sum (0 = correct, inf = not a number or not a sum)."""
    m = _SUM.match(prompt)
    text = completion.strip()
    if not m or not re.fullmatch(r"-?\d+", text):
        return float("inf")
    return float(abs(int(text) - (int(m[1]) + int(m[2]))))


def decide(item: dict[str, Any]) -> str:
    """The choice this annotator makes for an item from ``/api/next``."""
    da = _distance(item["prompt"], item["a"])
    if item["task"] == "pairwise":
        db = _distance(item["prompt"], item["b"])
        return "tie" if da == db else ("a" if da < db else "b")
    if item["task"] == "thumbs":
        return "up" if da == 0 else "down"
    return "5" if da == 0 else "4" if da < 10 else "3" if da < 100 else "2" if da < float("inf") else "1"


class Client:
    """A tiny JSON client over urllib (no dependency), with the annotator's bearer token."""

    def __init__(self, url: str, token: str, timeout: float = 30.0):
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def call(self, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="GET" if body is None else "POST",
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def label_one(self, decide_fn=decide) -> str | None:
        """Label the next item; returns the store's answer, or None when the queue is empty."""
        status, data = self.call("/api/next")
        if status != 200:
            raise RuntimeError(f"/api/next answered {status}: {data}")
        item = data["item"]
        if item is None:
            return None
        status, res = self.call("/api/label", {"item_id": item["id"], "choice": decide_fn(item)})
        if status >= 400:
            raise RuntimeError(f"/api/label answered {status}: {res}")
        return res["status"]


def run(url: str, token: str, max_labels: int | None = None, idle_exit: float | None = None,
        delay: float = 0.0) -> int:
    """Label until ``max_labels`` are stored, or the queue stays empty for ``idle_exit`` seconds."""
    client, done, idle_since = Client(url, token), 0, time.monotonic()
    while max_labels is None or done < max_labels:
        try:
            result = client.label_one()
        except (OSError, RuntimeError) as e:  # the server restarting: keep trying
            print(f"annotator: {e}", file=sys.stderr, flush=True)
            result = None
        if result is None:
            if idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                break
            time.sleep(0.1)
            continue
        idle_since = time.monotonic()
        done += result == "stored"
        if delay:
            time.sleep(delay)
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--max", type=int, default=None, help="stop after this many labels")
    ap.add_argument("--idle-exit", type=float, default=None, help="stop after this many idle seconds")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds between labels (a slower human)")
    a = ap.parse_args(argv)
    n = run(a.url, a.token, a.max, a.idle_exit, a.delay)
    print(f"annotator: {n} labels", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
