"""Labels per second that the labeling app sustains under 16 concurrent annotator clients.

Each run: a fresh SQLite queue of ``--items`` pairwise items, ``frl label serve`` on loopback, 16
clients (threads, one token each) fetching ``/api/next`` and posting ``/api/label`` until the queue
is empty. Reports each run and the median; checks that exactly ``--items`` rows were stored.

    .venv/bin/python benchmarks/bench_labels.py [--runs 3] [--items 1000] [--clients 16]
"""
from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path

from frl_plugins.rewards.human.annotator import run as label_until_empty
from frl_plugins.rewards.human.app import spawn
from frl_plugins.rewards.human.store import LabelStore


def one_run(items: int, clients: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "labels.sqlite"
        store = LabelStore(db)
        store.enqueue_many([("pairwise", f"{k % 90 + 10}+{k % 7 + 10}=", str(k), str(k + 1), {})
                            for k in range(items)])
        tokens = [store.add_annotator(f"client{k}") for k in range(clients)]
        server, url = spawn(db)
        try:
            counts = [0] * clients
            start = threading.Barrier(clients + 1)

            def client(k: int) -> None:
                start.wait()
                counts[k] = label_until_empty(url, tokens[k], idle_exit=0.0)

            threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
            for t in threads:
                t.start()
            start.wait()
            t0 = time.perf_counter()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - t0
        finally:
            server.terminate()
            server.wait(10)
        rows = sqlite3.connect(db).execute("SELECT COUNT(*) FROM labels").fetchone()[0]
        if rows != items or sum(counts) != items:
            raise SystemExit(f"lost or duplicated labels: {rows} rows, clients counted {sum(counts)}, "
                             f"expected {items}")
        return items / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=16)
    a = ap.parse_args()
    rates = []
    for r in range(a.runs):
        rates.append(one_run(a.items, a.clients))
        print(f"run {r + 1}: {rates[-1]:.1f} labels/s ({a.items} labels, {a.clients} clients, exactly {a.items} rows)",
              flush=True)
    print(f"median: {statistics.median(rates):.1f} labels/s over {a.runs} runs")


if __name__ == "__main__":
    main()
