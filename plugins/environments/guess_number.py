"""The ``guess_number`` environment and its data source.

    data: {train: {guess_number: 100, size: 500, seed: 0}}
    environment: {type: guess_number, max_turns: 8}

The model guesses a secret whole number from 1 to N; the environment answers "Higher." or "Lower." until the
guess is right. Solved in t turns, the reward is ``1 - (t - 1) / max_turns``: 1.0 for a first guess, less for
every turn more (bisection solves 1..100 in at most 7). Unsolved after ``max_turns`` the episode is truncated
with reward 0.0. A turn with no number is answered with the rules again, and counts as a turn.
"""
from __future__ import annotations

import random
import re
from typing import Any

from pydantic import Field, field_validator

from feedback_rl import Environment, PluginOptions, hookimpl
from feedback_rl.data import DataSource
from feedback_rl.environments import EnvironmentOptions, Episode, Reply

INTEGER = re.compile(r"-?\d+")


QUESTION = ("I am thinking of a whole number from 1 to {high}. Guess it: answer with one number. "
            "After each guess I say Higher or Lower.")


def question(high: int, text: str = QUESTION) -> str:
    return text.format(high=high)


class GuessNumberData(DataSource):
    """Rows ``{prompt: [user turn], secret, high}``: the same range, size and seed give the same rows."""

    name = "guess_number"

    class Options(PluginOptions):
        guess_number: int = Field(ge=2, description="the secret is a whole number from 1 to this")
        size: int = Field(500, ge=1, description="rows to generate")
        seed: int = Field(0, ge=0, description="which rows")
        question: str = Field(QUESTION, description="the opening turn, {high} the top of the range (a short one "
                              "costs a character-level model fewer tokens every turn)")

        @field_validator("question")
        @classmethod
        def _formats(cls, text: str) -> str:
            try:
                text.format(high=1)
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(f"only {{high}} may be named in braces ({type(e).__name__}: {e})") from None
            return text

    @classmethod
    def check_eval(cls, train: Options, eval: Options) -> str | None:
        if train.seed == eval.seed and train.guess_number == eval.guess_number:
            return f"seed {eval.seed} is data.train's: the eval rows would repeat train's; give data.eval another seed"
        return None

    def rows(self) -> list[dict[str, Any]]:
        o = self.options
        rng = random.Random(f"guess_number/{o.guess_number}/{o.seed}")
        return [{"prompt": [{"role": "user", "content": question(o.guess_number, o.question)}],
                 "secret": rng.randint(1, o.guess_number), "high": o.guess_number} for _ in range(o.size)]


class GuessEpisode(Episode):
    def __init__(self, messages: list[dict[str, Any]], secret: int, high: int, max_turns: int):
        super().__init__(messages)
        self.secret, self.high, self.max_turns = secret, high, max_turns
        self.turns = 0

    def step(self, message: dict[str, Any]) -> Reply:
        self.turns += 1
        found = INTEGER.findall(message["content"])
        guess = int(found[-1]) if found else None
        if guess == self.secret:
            return Reply(reward=1.0 - (self.turns - 1) / self.max_turns, done=True,
                         info={"guess": guess, "turns": self.turns})
        if self.turns >= self.max_turns:
            return Reply(reward=0.0, truncated=True, info={"guess": guess, "turns": self.turns})
        if guess is None or not 1 <= guess <= self.high:
            text = f"Answer with one whole number from 1 to {self.high}."
        else:
            text = "Higher." if guess < self.secret else "Lower."
        return Reply([{"role": "user", "content": text}], info={"guess": guess})


class GuessNumber(Environment):
    """Higher or lower; rows need ``prompt``, ``secret`` and ``high`` (the ``guess_number`` data source makes
    them)."""

    name = "guess_number"

    def reset(self, row: dict[str, Any], seed: int, episode_id: str) -> Episode:
        prompt = row["prompt"]
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        return GuessEpisode(messages, int(row["secret"]), int(row["high"]), self.options.max_turns)


@hookimpl
def frl_register_environments(register):
    register(GuessNumber)


@hookimpl
def frl_register_datasets(register):
    register(GuessNumberData)
