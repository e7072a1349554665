"""A verifiers v1 taskset whose episodes call a tool: an MCP tool server that verifiers starts itself.

``AddTools`` is a ``vf.Toolset`` (verifiers 0.4's tool mechanism): the taskset declares it in ``toolsets``,
verifiers runs this module as a local MCP server (``python -m tool_taskset``, streamable HTTP on loopback) once per
environment, and the ``null`` harness's chat program lists its tools, offers them to the endpoint as OpenAI
``tools``, runs each ``tool_calls`` entry of a reply on the server and sends the result back as a ``tool`` turn.

The tool's answer is not the sum the model could guess: ``add`` adds a salt that only the server knows, so a tool
turn holding it was computed by the server. The reward reads the last reply: 1 when it is the tool's answer.
"""
import verifiers.v1 as vf
from echo_taskset import last_reply   # the tier's tasksets folder is on the path, here and in subprocesses

SALT = 1000
PAIRS = [[2, 3], [4, 5]]


def added(a: int, b: int) -> str:
    """What the tool answers: the sum and the server's salt."""
    return str(a + b + SALT)


def question(a: int, b: int) -> str:
    return f"add {a} and {b}"


class AddTools(vf.Toolset[vf.ToolsetConfig]):
    TOOL_PREFIX = None   # the tool is offered as `add`, not `add_tools_add`

    @vf.tool
    def add(self, a: int, b: int) -> str:
        """Add two integers."""
        return added(a, b)


class ToolData(vf.TaskData):
    answer: str


class ToolTask(vf.Task[ToolData, vf.State, vf.TaskConfig]):
    @vf.reward
    async def answered(self, task: ToolData, trace: vf.Trace) -> float:
        return float(last_reply(trace).strip() == task.answer)


class ToolConfig(vf.TasksetConfig):
    pairs: list[list[int]] = PAIRS


class ToolTaskset(vf.Taskset[ToolTask, ToolConfig]):
    def load(self):
        for a, b in self.config.pairs:
            yield ToolTask(ToolData(prompt=question(a, b), answer=added(a, b)))

    @classmethod
    def toolsets(cls, config: ToolConfig) -> list[vf.Toolset]:
        return [AddTools(vf.ToolsetConfig())]


__all__ = ["ToolTaskset"]

if __name__ == "__main__":   # how verifiers starts the tool server
    AddTools.run()
