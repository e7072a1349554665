"""The ``calculator`` environment and its data source.

    data: {train: {calculator: 3, size: 500, seed: 0}, eval: {calculator: 3, size: 100, seed: 1}}
    environment: {type: calculator, max_turns: 4}

Each row asks for the product (or sum, difference) of numbers of ``calculator`` digits: beyond what a small
model does in its head, easy with the ``calculate`` tool. The episode answers each tool call with the tool's
result; the first turn without a tool call is the final answer, rewarded 1.0 when its last number is the exact
result and 0.0 otherwise.

``calculator_demos`` makes demonstration conversations of the same questions for an SFT stage before the
episodes (``messages`` rows): a share ``tool_rate`` call the tool and copy its result, the others answer at once.
A random model cannot invent the call format from a reward alone; after these it calls the tool on some
questions, and reinforcement learning on the episodes decides how often.
"""
from __future__ import annotations

import json
import random
import re
from functools import lru_cache
from typing import Any, Literal

from pydantic import Field, field_validator

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


class Questions(PluginOptions):
    """What both calculator data sources draw their questions from (each adds its digits key)."""
    size: int = Field(500, ge=1, description="rows to generate")
    seed: int = Field(0, ge=0, description="which rows")
    operations: list[Literal["+", "-", "*"]] = Field(["*"], min_length=1, description="operators to draw from")
    instruction: str = Field(INSTRUCTION, description="what follows the question ('' for nothing: a model "
                             "taught by demonstrations needs no words, and a character-level one reads fewer)")


class CalculatorData(DataSource):
    """Rows ``{prompt: [user turn], answer, expression}``: the same digits, size and seed give the same rows."""

    name = "calculator"

    class Options(Questions):
        calculator: int = Field(ge=1, le=12, description="digits of each operand")

    @classmethod
    def check_eval(cls, train: Options, eval: Options) -> str | None:
        if train.seed == eval.seed and train.calculator == eval.calculator:
            return f"seed {eval.seed} is data.train's: the eval rows would repeat train's; give data.eval another seed"
        return None

    def rows(self) -> list[dict[str, Any]]:
        o = self.options
        return [{"prompt": [{"role": "user", "content": question(expression, o.instruction)}],
                 "answer": calculate(expression), "expression": expression}
                for expression in expressions(o.calculator, o.size, o.seed, o.operations, self.name)]


def expressions(digits: int, size: int, seed: int, operations: list[str], source: str) -> list[str]:
    """``size`` expressions ``"a op b"`` of ``digits``-digit operands, the same for the same arguments."""
    rng = random.Random(f"{source}/{digits}/{seed}")
    low, high = 10 ** (digits - 1), 10 ** digits - 1
    out = []
    for _ in range(size):
        a, b, op = rng.randint(low, high), rng.randint(low, high), rng.choice(operations)
        out.append(f"{a} {op} {b}")
    return out


def question(expression: str, instruction: str) -> str:
    return f"What is {expression}? {instruction}".strip()


class CalculatorDemos(DataSource):
    """SFT demonstrations ``{messages}`` of calculator questions, with and without a ``calculate`` call.

    A share ``tool_rate`` of the rows call the tool, read its result and answer with it; the others answer at
    once. The call is written as the environment parses it and the tool turn as the environment answers it, and
    the tool is described as the environment describes it (``describe_tools``), so a demonstration is the
    transcript of an episode that went that way."""

    name = "calculator_demos"

    class Options(Questions):
        calculator_demos: int = Field(ge=1, le=12, description="digits of each operand")
        tool_rate: float = Field(0.5, ge=0.0, le=1.0, description="the share of rows that call the tool")
        answer_format: str = Field("{answer}", description="how the final answer is written, {answer} the number "
                                   "(the environment reads the turn's last number)")
        describe_tools: bool = Field(True, description="give each row the calculate tool's schema (the `tools` "
                                     "column), offered as the environment offers it; false for an environment "
                                     "with describe_tools: false")

        @field_validator("answer_format")
        @classmethod
        def _names_the_answer(cls, text: str) -> str:
            try:
                written = text.format(answer="12345")
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(f"only {{answer}} may be named in braces ({type(e).__name__}: {e})") from None
            if last_number(written) != "12345":
                raise ValueError("the answer must be the last number written: the environment reads that one")
            return text

    def rows(self) -> list[dict[str, Any]]:
        o = self.options
        rng = random.Random(f"{self.name}/{o.seed}/tool_rate")
        out = []
        for expression in expressions(o.calculator_demos, o.size, o.seed, o.operations, self.name):
            answer = calculate(expression)
            turns = [{"role": "user", "content": question(expression, o.instruction)}]
            if rng.random() < o.tool_rate:
                call = json.dumps({"name": "calculate", "arguments": {"expression": expression}})
                turns += [{"role": "assistant", "content": f"<tool_call>{call}</tool_call>"},
                          {"role": "tool", "name": "calculate", "content": answer}]
            row = {"messages": turns + [{"role": "assistant", "content": o.answer_format.format(answer=answer)}]}
            out.append({**row, "tools": [calculate_tool().schema]} if o.describe_tools else row)
        return out


@lru_cache(maxsize=1)
def calculate_tool() -> Any:
    return tool(calculate)  # built on first use: its schema needs transformers, which `frl plugins` need not load


class CalculatorEpisode(Episode):
    def __init__(self, messages: list[dict[str, Any]], answer: str, options: Any):
        self.callable = [calculate_tool()]
        super().__init__(messages, self.callable if options.describe_tools else [])
        self.answer = answer
        self.options = options

    def step(self, message: dict[str, Any]) -> Reply:
        calls = parse_tool_calls(message["content"], {t.name for t in self.callable})
        if calls:
            answers = answer_calls(calls, self.callable, self.options.tool_seconds, self.options.tool_memory_mb)
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
        describe_tools: bool = Field(True, description="offer the tool in the prompt (the template's tools branch "
                                     "or a Hermes system turn); false: calls are parsed and answered but the prompt "
                                     "is the question alone, for a model that learned the call from "
                                     "calculator_demos (a tiny character-level model cannot read the ~860-character "
                                     "description in seconds of CPU)")

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
    register(CalculatorDemos)
