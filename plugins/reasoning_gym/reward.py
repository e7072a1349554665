"""The ``reasoning_gym`` reward source: a reasoning-gym task grades the answer with its own ``score_answer``."""
from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import Field, model_validator

from feedback_rl import PluginContext, PluginOptions, RewardSource, Rollout, Score, UserError

from . import tasks


NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def extract(completion: str, how: str, tag: str) -> str | None:
    """The answer in a completion: the last ``<tag>...</tag>`` (reasoning-gym's convention), the last
    number (thousands commas dropped), the last non-empty line, or the whole completion, stripped; None
    when there is none."""
    if how == "answer_tag":
        from reasoning_gym.utils import extract_answer
        return extract_answer(completion, tag_name=tag)
    if how == "last_number":
        found = NUMBER.findall(completion.replace(",", ""))
        return found[-1] if found else None
    if how == "last_line":
        lines = [line.strip() for line in completion.splitlines() if line.strip()]
        return lines[-1] if lines else None
    return completion.strip() or None


class ReasoningGymScore(RewardSource):
    """Grades rows from the ``reasoning_gym`` data source with their task's ``score_answer`` (partial credit kept).

    The answer is taken from the completion by ``extract``: ``answer_tag`` (the last ``<answer>...</answer>``;
    ``tag`` renames it), ``last_number`` (short numeric answers from a chat model that does not use tags),
    ``last_line`` or ``whole``. A completion with no answer is graded as the task grades
    no answer (0.0 in reasoning-gym): a format failure is the policy's. A row that did not come from the data
    source, or a ``score_answer`` that raises, is ``Score.error``.
    """

    name = "reasoning_gym"

    class Options(PluginOptions):
        extract: Literal["answer_tag", "last_number", "last_line", "whole"] = Field(
            "answer_tag", description="where the answer is in a completion")
        tag: str = Field("answer", pattern=r"^[\w-]+$", description="the tag of extract: answer_tag")

        @model_validator(mode="after")
        def _installed(self) -> ReasoningGymScore.Options:
            tasks.registry()
            return self

    @classmethod
    def preflight(cls, options: Options, context: PluginContext, rows: Any) -> None:
        if rows is None:
            return
        lacking = [line for row, line in zip(rows, rows.lines) if not isinstance(row.get("reasoning_gym"), dict)]
        if lacking:
            raise UserError(f"{rows.origin}:{lacking[0]}: {len(lacking)} of {len(rows)} rows have no 'reasoning_gym' "
                            f"field, which reward source '{context.name}' grades with; take the rows from "
                            "data: {train: {reasoning_gym: TASK, ...}}")

    def describe(self) -> dict[str, Any]:
        return self.options.model_dump()

    def score(self, rollouts: list[Rollout]) -> list[Score]:
        return [self._score_one(r.answer, r.row) for r in rollouts]

    def _score_one(self, completion: str, row: dict[str, Any]) -> Score:
        made = row.get("reasoning_gym")
        if not isinstance(made, dict) or "task" not in made:
            return Score.error("row has no 'reasoning_gym' field: it did not come from the reasoning_gym data source")
        entry = {"question": row.get("question", ""), "answer": row.get("answer"), "metadata": row.get("metadata", {})}
        answer = extract(completion, self.options.extract, self.options.tag)
        try:
            value = tasks.scorer(made["task"], made.get("config", {})).score_answer(answer, entry)
        except Exception as e:  # noqa: BLE001 - the task's grader failing is reported, never a 0
            return Score.error(f"{made['task']}.score_answer raised {type(e).__name__}: {str(e)[:200]}")
        if value is None or not math.isfinite(float(value)):
            return Score.error(f"{made['task']}.score_answer returned {value!r}")
        return Score.ok(float(value))
