"""The reward kinds that answer from outside the trainer drive two bf16 steps on CUDA through the real
``frl train``: an LLM judge (a loopback fake OpenAI server) and people (a SQLite queue that a thread answers
while the run blocks on each step's labels). The rule checker, offline data and
a trained reward model are covered with the optimizers they feed (test_optimizers_cuda.py); an environment's own
rewards on episodes (guess_number) here too."""
import json
import sqlite3
import threading
import time

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from frl_plugins.rewards.human.store import LabelStore
from frl_plugins.serve.server import ServerThread
from gpu_run import train_on_gpu

pytestmark = pytest.mark.gpu


async def judge(request: Request) -> JSONResponse:
    """An OpenAI chat-completions endpoint that scores a completion by its length (0 to 9), so a group's
    scores differ and GRPO has advantages to learn from."""
    body = await request.json()
    text = body["messages"][-1]["content"]
    reply = json.dumps({"score": len(text) % 10})
    return JSONResponse({"id": "fake", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


def test_a_judge_on_loopback_drives_grpo_on_cuda(tmp_path):
    with ServerThread(Starlette(routes=[Route("/v1/chat/completions", judge, methods=["POST"])])) as server:
        trained = train_on_gpu("judge.yaml", tmp_path,
                               "--set", f"stages.grpo.rewards.sources.critic.base_url={server.url}")
    scored = [m for m in trained.metrics if "reward/critic/mean" in m]
    assert len(scored) == 2 and len(trained.losses("grpo")) == 2
    assert all(m.get("reward/critic/error_rate", 0.0) == 0.0 for m in scored), scored


def answer(db, stop: threading.Event) -> None:
    """A person at the queue: prefers the completion with more digits, and A when they have as many (the
    simulated annotator of frl_plugins.rewards.human.annotator calls two non-numbers a tie, and a random
    tiny model rarely writes a number, so DPO would get no pair)."""
    store = LabelStore(db)
    while not stop.is_set():
        item = store.next_item("sim")
        if item is None:
            time.sleep(0.05)
            continue
        digits = [sum(c.isdigit() for c in item[k]) for k in ("a", "b")]
        store.submit(item["id"], "sim", "b" if digits[1] > digits[0] else "a")


def test_labels_from_a_human_queue_drive_dpo_on_cuda(tmp_path):
    db = tmp_path / "labels.sqlite"
    LabelStore(db).add_annotator("sim")
    stop = threading.Event()
    person = threading.Thread(target=answer, args=(db, stop), daemon=True)
    person.start()
    try:
        trained = train_on_gpu("human.yaml", tmp_path, "--set", f"stages.dpo.rewards.sources.people.db={db}")
    finally:
        stop.set()
        person.join(10)
    fed = [m for m in trained.metrics if m.get("feedback/size", 0) > 0 and "loss" in m]
    assert len(fed) == 2, trained.metrics
    labels = sqlite3.connect(db).execute("SELECT COUNT(*) FROM labels").fetchone()[0]
    assert labels >= 2 * 4   # per_step items each step, each answered


def test_an_environments_own_rewards_drive_grpo_on_episodes_on_cuda(tmp_path):
    trained = train_on_gpu("episodes.yaml", tmp_path)
    scored = [m for m in trained.metrics if "env/turns_mean" in m]
    assert len(scored) == 2 and len(trained.losses("grpo")) == 2
