"""A small OpenEnv text game for the bridge's tests, written against OpenEnv's real base classes.

The model says a word each turn. A turn's reward is the word's length times the episode's multiplier (a reset
argument), so every step has a reward of its own; the observation reports the turn and the letters so far, which
only an environment that kept its episode's state can know. The episode is done after ``rounds`` turns. The word
"boom" raises, as a broken environment would; "zzz" takes half a second, as a slow one would.
"""
from __future__ import annotations

import time
from typing import Any

from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import Action, Observation, State


SLOW = 0.5   # seconds the word "zzz" takes


class WordAction(Action):
    word: str


class WordObservation(Observation):
    text: str = ""
    turn: int = 0


class WordGame(Environment[WordAction, WordObservation, State]):
    SUPPORTS_CONCURRENT_SESSIONS = True   # each instance keeps its own episode: a server may hold several

    def __init__(self, rounds: int = 3):
        super().__init__()
        self.rounds = rounds
        self.multiplier, self.letters = 1, 0
        self._state = State()
        self.closed = False

    def reset(self, seed: int | None = None, episode_id: str | None = None, multiplier: int = 1,
              **kwargs: Any) -> WordObservation:
        self._state = State(episode_id=episode_id, step_count=0)
        self.multiplier, self.letters = multiplier, 0
        return WordObservation(text=f"Say {self.rounds} words (episode {episode_id}, seed {seed}).")

    def step(self, action: WordAction, timeout_s: float | None = None, **kwargs: Any) -> WordObservation:
        word = action.word.strip()
        if word == "boom":
            raise ValueError("the word 'boom' breaks the game")
        if word == "zzz":
            time.sleep(SLOW)
        self._state.step_count += 1
        turn = self._state.step_count
        self.letters += len(word)
        return WordObservation(text=f"Turn {turn}: {len(word)} letters, {self.letters} so far.", turn=turn,
                               done=turn >= self.rounds, reward=float(len(word) * self.multiplier),
                               metadata={"turn": turn, "letters": self.letters})

    @property
    def state(self) -> State:
        return self._state

    def close(self) -> None:
        self.closed = True


def word_of(text: str) -> dict[str, Any]:
    """An action hook: the reply's first word, upper-cased (the tests see which hook ran)."""
    return {"word": (text.split() or [""])[0].upper()}


def turn_only(fields: dict[str, Any]) -> list[dict[str, Any]]:
    """An observation hook: the turn number as a tool message."""
    return [{"role": "tool", "content": f"turn={fields['turn']}"}]


class StrictWordGame(WordGame):
    """The game with a reset() that takes no other keyword arguments."""

    def reset(self, seed: int | None = None, episode_id: str | None = None, multiplier: int = 1) -> WordObservation:
        return super().reset(seed, episode_id, multiplier)
