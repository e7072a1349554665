"""Judge throughput: N judgments against a loopback server that adds 100 ms to every reply.

Reports, per concurrency bound C, the wall time against the bound N x latency / C, and the
speed-up over sequential calls (one at a time, the way a naive judge loop makes them).

    .venv/bin/python benchmarks/bench_judge.py [--n 256] [--latency 0.1] [--concurrency 1,8,32,64]
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from feedback_rl import PluginContext, Rollout
from frl_plugins.rewards.judge import JudgeSource
from frl_plugins.serve.server import ServerThread


def slow_server(latency: float) -> Starlette:
    async def handle(request):
        await request.json()
        await asyncio.sleep(latency)
        return JSONResponse({"id": "b", "object": "chat.completion", "created": 0, "model": "m",
                             "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": '{"score": 5}'}}]})
    return Starlette(routes=[Route("/v1/chat/completions", handle, methods=["POST"])])


def run_judge(url: str, n: int, concurrency: int, tag: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        opts = JudgeSource.Options(base_url=url, model="m", template="{completion}", concurrency=concurrency,
                                   cache=False, timeout=30)
        judge = JudgeSource(opts, PluginContext(name="bench", run_dir=Path(tmp)))
        rollouts = [Rollout(prompt="p", completion=f"{tag}-{k}", row={}, group=k, prompt_ids=[], completion_ids=[])
                    for k in range(n)]
        try:
            start = time.perf_counter()
            scores = judge.score(rollouts)
            elapsed = time.perf_counter() - start
        finally:
            judge.close()
    assert all(s.value == 5.0 for s in scores)
    return elapsed


def run_sequential(url: str, n: int) -> float:
    import openai
    client = openai.OpenAI(base_url=url, api_key="x")
    start = time.perf_counter()
    for k in range(n):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"seq-{k}"}], max_tokens=8)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", default="1,8,32,64")
    args = ap.parse_args()
    with ServerThread(slow_server(args.latency)) as server:
        seq = run_sequential(server.url, args.n)
        print(f"{args.n} judgments, {args.latency * 1000:.0f} ms added per reply")
        print(f"sequential calls:     {seq:7.2f} s  {args.n / seq:7.1f} judgments/s  "
              f"(bound {args.n * args.latency:.2f} s)")
        print(f"{'concurrency':>11} {'wall_s':>8} {'bound_s':>8} {'of_bound':>8} {'judg/s':>8} {'vs_seq':>7}")
        for c in (int(x) for x in args.concurrency.split(",")):
            t = run_judge(server.url, args.n, c, f"c{c}")
            bound = args.n * args.latency / c
            print(f"{c:>11} {t:>8.2f} {bound:>8.2f} {bound / t:>8.0%} {args.n / t:>8.1f} {seq / t:>6.1f}x")


if __name__ == "__main__":
    main()
