"""A multi-turn verifiers v1 taskset written for the tier: the user asks for a word, reads the reply, and asks again.

The smallest multi-turn shape verifiers 0.4 runs offline: a taskset module that exports an ``Env`` besides its
``Taskset`` (verifiers then plays each task through that Env instead of its single-agent default), whose ``run``
holds the agent's rollout open as an ``interaction`` and answers its first reply with a scripted user turn. The
``null`` harness resumes its chat program on the conversation so far, so the policy is called twice per episode
with the user's turn between the calls. No model plays the user (verifiers' own ``user-sim`` env would need a
second endpoint) and no tool is called (the tiny policy never writes a well-formed tool call).

The reward is the share of the LAST reply's characters that are lowercase letters, as the words are: it reads the
second turn's sample, and even an untrained tiny model's replies earn rewards that differ within a group (GRPO has
a signal; the share of the word's own characters, echo_taskset's reward, is zero for nearly every two-turn reply).
"""
import verifiers.v1 as vf
from echo_taskset import WORDS, last_reply   # the tier's tasksets folder is on the path, here and in subprocesses


def lowercase_share(reply: str) -> float:
    return sum(c.islower() for c in reply) / len(reply) if reply else 0.0


def again(word: str) -> str:
    """What the user answers back after the first reply."""
    return f"again: {word}"


class AgainData(vf.TaskData):
    answer: str


class AgainTask(vf.Task[AgainData, vf.State, vf.TaskConfig]):
    @vf.reward
    async def lowercase(self, task: AgainData, trace: vf.Trace) -> float:
        return lowercase_share(last_reply(trace))


class AgainConfig(vf.TasksetConfig):
    words: list[str] = WORDS


class AgainTaskset(vf.Taskset[AgainTask, AgainConfig]):
    def load(self):
        for word in self.config.words:
            yield AgainTask(AgainData(prompt=f"say {word}", answer=word))


class AgainEnv(vf.SingleAgentEnv):
    """Two assistant turns: the task's prompt opens, the user answers the first reply, the agent replies again."""

    async def run(self, task, agents):
        async with agents.agent.interaction(task) as chat:
            first = await chat.turn()  # a prompted task speaks first: the opening reply
            if not first.terminated:
                await chat.turn(again(task.data.answer))


__all__ = ["AgainTaskset", "AgainEnv"]
