"""docs/episodes.md's OpenEnv bridge runs as written, against a stand-in with OpenEnv's shapes (pydantic
Action/Observation, reset(seed, episode_id), step(action) -> Observation(done, reward, metadata)): each step's
reward stays that step's."""
from __future__ import annotations

import asyncio
import re
from pathlib import Path

from pydantic import BaseModel, Field

from feedback_rl import PluginContext
from feedback_rl.environments import play

DOC = Path(__file__).resolve().parents[2] / "docs" / "episodes.md"


class EchoAction(BaseModel):
    message: str


class EchoObservation(BaseModel):
    echoed_message: str = ""
    done: bool = False
    reward: float | None = None
    metadata: dict = Field(default_factory=dict)


class EchoEnvironment:
    """OpenEnv's echo environment, in its shape: rewards the length of each message, ends after 3."""

    def __init__(self):
        self.steps, self.closed = 0, False

    def reset(self, seed=None, episode_id=None, **kwargs):
        self.steps = 0
        return EchoObservation(echoed_message=f"episode {episode_id} ready")

    def step(self, action, timeout_s=None, **kwargs):
        self.steps += 1
        return EchoObservation(echoed_message=action.message, done=self.steps == 3,
                               reward=float(len(action.message)), metadata={"step": self.steps})

    def close(self):
        self.closed = True


def bridge():
    block = re.search(r"### OpenEnv, thinly.*?```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    namespace = {"EchoEnvironment": EchoEnvironment, "EchoAction": EchoAction}
    exec(compile(block, str(DOC), "exec"), namespace)
    return namespace["EchoBridge"]


def test_the_documented_openenv_bridge_plays_an_episode_with_per_step_rewards(tmp_path):
    cls = bridge()
    env = cls(cls.Options(), PluginContext("openenv_echo", tmp_path))
    said = iter(["a", "bb", "ccc", "never"])
    out = play(env, {}, lambda messages: next(said), episode_id="e7")
    assert out.messages[0] == {"role": "user", "content": "episode e7 ready"}
    assert out.rewards == [1.0, 2.0, 3.0] and out.done and [i["step"] for i in out.infos] == [1, 2, 3]
    assert out.messages[2] == {"role": "user", "content": "a"}


def test_an_episode_steps_asynchronously_through_its_synchronous_step(tmp_path):
    cls = bridge()
    episode = cls(cls.Options(), PluginContext("openenv_echo", tmp_path)).reset({}, seed=0, episode_id="e1")
    reply = asyncio.run(episode.step_async({"role": "assistant", "content": "hey"}))
    assert reply.reward == 3.0 and reply.messages == [{"role": "user", "content": "hey"}]
    episode.close()
    assert episode.env.closed
