"""The ``calculator`` environment and its data source.

    data: {train: {calculator: 3, size: 500, seed: 0}, eval: {calculator: 3, size: 100, seed: 1}}
    environment: {type: calculator, max_turns: 4}

Each row asks for the product (or sum, difference) of numbers of ``calculator`` digits: beyond what a small
model does in its head, easy with the ``calculate`` tool. The episode answers each tool call with the tool's
result; the first turn without a tool call is the final answer, rewarded 1.0 when its last number is the exact
result and 0.0 otherwise.
"""
from __future__ import annotations

import random
import re
from functools import lru_cache
from typing import Any, Literal

from pydantic import Field

from feedback_rl import Environment, PluginOptions, hookimpl
from feedback_rl.data import DataSource
from feedback_rl.environments import (
    EnvironmentOptions, Episode, Reply, answer_calls, parse_tool_calls, tool, tool_messages,
)

from .tool import calculate

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
INSTRUCTION = "Use the calculate tool, then give the result as a number alone."


def last_number(text: str) -> str | None:
    """The last number written in ``text``, thousands separators dropped."""
    found = NUMBER.findall(text)
    return found[-1].replace(",", "") if found else None


class CalculatorData(DataSource):
    """Rows ``{prompt: [user turn], answer, expression}``: the same digits, size and seed give the same rows."""

    name = "calculator"

    class Options(PluginOptions):
        calculator: int = Field(ge=1, le=12, description="digits of each operand")
        size: int = Field(500, ge=1, description="rows to generate")
        seed: int = Field(0, ge=0, description="which rows")
        operations: list[Literal["+", "-", "*"]] = Field(["*"], min_length=1, description="operators to draw from")

    @classmethod
    def check_eval(cls, train: Options, eval: Options) -> str | None:
        if train.seed == eval.seed and train.calculator == eval.calculator:
            return f"seed {eval.seed} is data.train's: the eval rows would repeat train's; give data.eval another seed"
        return None

    def rows(self) -> list[dict[str, Any]]:
        o = self.options
        rng = random.Random(f"calculator/{o.calculator}/{o.seed}")
        low, high = 10 ** (o.calculator - 1), 10 ** o.calculator - 1
        out = []
        for _ in range(o.size):
            a, b, op = rng.randint(low, high), rng.randint(low, high), rng.choice(o.operations)
            expression = f"{a} {op} {b}"
            out.append({"prompt": [{"role": "user", "content": f"What is {expression}? {INSTRUCTION}"}],
                        "answer": calculate(expression), "expression": expression})
        return out


@lru_cache(maxsize=1)
def calculate_tool() -> Any:
    return tool(calculate)  # built on first use: its schema needs transformers, which `frl plugins` need not load


class CalculatorEpisode(Episode):
    def __init__(self, messages: list[dict[str, Any]], answer: str, options: Any):
        super().__init__(messages, [calculate_tool()])
        self.answer = answer
        self.options = options

    def step(self, message: dict[str, Any]) -> Reply:
        calls = parse_tool_calls(message["content"], {t.name for t in self.tools})
        if calls:
            answers = answer_calls(calls, self.tools, self.options.tool_seconds, self.options.tool_memory_mb)
            return Reply(tool_messages(answers), info={"tool_calls": [
                {"outcome": result.outcome, "name": call.name,
                 "arguments": call.arguments, "result": result.content} for call, result in answers]})
        given = last_number(message["content"])
        correct = given is not None and given == self.answer
        return Reply(reward=1.0 if correct else 0.0, done=True, info={"answer": given, "expected": self.answer})


class Calculator(Environment):
    """Arithmetic with a ``calculate`` tool; rows need ``prompt`` and ``answer`` (the ``calculator`` data source
    makes them)."""

    name = "calculator"

    class Options(EnvironmentOptions):
        tool_seconds: float = Field(5.0, gt=0, description="time limit of one tool call")
        tool_memory_mb: int = Field(512, ge=64, description="memory limit of one tool call")

    def reset(self, row: dict[str, Any], seed: int, episode_id: str) -> Episode:
        prompt = row["prompt"]
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        return CalculatorEpisode(messages, str(row["answer"]), self.options)


@hookimpl
def frl_register_environments(register):
    register(Calculator)


@hookimpl
def frl_register_datasets(register):
    register(CalculatorData)
