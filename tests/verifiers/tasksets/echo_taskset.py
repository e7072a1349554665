"""A verifiers v1 taskset written for the tier: a few words to repeat, and a reward function.

The reward is the share of the word's characters the reply contains, so even an untrained tiny model earns
rewards that differ between rollouts (GRPO has a signal) and the test can recompute them from the reply.
"""
import verifiers.v1 as vf

WORDS = ["ab", "xyz", "hello", "42", "ok"]


def share_of(word: str, reply: str) -> float:
    return sum(c in reply for c in word) / len(word)


class EchoData(vf.TaskData):
    answer: str


class EchoTask(vf.Task[EchoData, vf.State, vf.TaskConfig]):
    @vf.reward
    async def echoed(self, task: EchoData, trace: vf.Trace) -> float:
        return share_of(task.answer, last_reply(trace))


def last_reply(trace: vf.Trace) -> str:
    replies = [m for m in (trace.branches[-1].messages if trace.branches else []) if m.role == "assistant"]
    return (replies[-1].content or "") if replies else ""


class EchoConfig(vf.TasksetConfig):
    words: list[str] = WORDS


class EchoTaskset(vf.Taskset[EchoTask, EchoConfig]):
    def load(self):
        for word in self.config.words:
            yield EchoTask(EchoData(prompt=f"say {word}", answer=word))


__all__ = ["EchoTaskset"]
