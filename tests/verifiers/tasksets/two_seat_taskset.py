"""A taskset whose own Env has two seats (a user-sim-like pair): the bridge plays one seat per episode, under one
session, so a recipe naming it is refused before a model loads (test_bridge_chat.py)."""
import verifiers.v1 as vf
from again_taskset import AgainConfig, AgainTask, AgainTaskset


class TwoSeatConfig(vf.EnvConfig):
    asker: vf.AgentConfig = vf.AgentConfig()
    answerer: vf.AgentConfig = vf.AgentConfig()


class TwoSeatTaskset(vf.Taskset[AgainTask, AgainConfig]):
    load = AgainTaskset.load


class TwoSeatEnv(vf.Env[TwoSeatConfig]):
    async def run(self, task, agents):
        await agents.asker.run(task)
        await agents.answerer.run(task)


__all__ = ["TwoSeatTaskset", "TwoSeatEnv"]
