"""The ``reasoning_gym`` data source: rows generated offline from one reasoning-gym task."""
from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from feedback_rl import PluginOptions
from feedback_rl.data import DataSource

from . import tasks


class ReasoningGymData(DataSource):
    """Rows of a reasoning-gym task: ``prompt`` (its question), ``answer``, ``task``, ``metadata``.

    Each row also keeps ``question`` and ``reasoning_gym: {task, config}``, which the ``reasoning_gym``
    reward source reads to grade with the task's own ``score_answer``. The same task, config, size and
    seed give the same rows; seeds never share an item (the train and eval of a stage differ by seed, and
    an eval row whose prompt is also in train is dropped).
    """

    name = "reasoning_gym"

    class Options(PluginOptions):
        reasoning_gym: str = Field(description="the task's name in reasoning-gym, e.g. leg_counting, basic_arithmetic")
        size: int = Field(500, ge=1, le=tasks.STRIDE, description="rows to generate")
        seed: int = Field(0, ge=0, description="which rows: a different seed gives different items")
        config: dict[str, Any] = Field({}, description="the task's own config keys (its difficulty), e.g. "
                                                      "{min_animals: 2, max_animals: 3}")
        instruction: str | None = Field(None, description="text appended to every question on a new line, e.g. "
                                                          "how to format the answer")
        turns: bool = Field(False, description="the prompt as one user turn ([{role: user, content: ...}]) for "
                                               "a chat template, instead of plain text")

        @model_validator(mode="before")
        @classmethod
        def _known_task(cls, v: Any) -> Any:
            if isinstance(v, dict) and isinstance(v.get("reasoning_gym"), str):
                tasks.check_task(v["reasoning_gym"])  # before config: its keys depend on the task
            return v

        @field_validator("config")
        @classmethod
        def _fits_task(cls, config: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
            if "reasoning_gym" in info.data:
                tasks.check_config(info.data["reasoning_gym"], config)
            return config

    @classmethod
    def check_eval(cls, train: Options, eval: Options) -> str | None:
        if (train.reasoning_gym, train.config, train.seed) == (eval.reasoning_gym, eval.config, eval.seed):
            return f"seed {eval.seed} is data.train's: the eval rows would repeat train's; give data.eval another seed"
        return None

    def rows(self) -> list[dict[str, Any]]:
        o = self.options
        ds = tasks.dataset(o.reasoning_gym, o.config, size=o.size, seed=o.seed)
        out = []
        for i in range(o.size):
            entry = ds[i]
            text = entry["question"] + (f"\n{o.instruction}" if o.instruction else "")
            out.append({
                "prompt": [{"role": "user", "content": text}] if o.turns else text,
                "answer": entry["answer"],
                "task": o.reasoning_gym,
                "question": entry["question"],
                "metadata": entry["metadata"],
                "reasoning_gym": {"task": o.reasoning_gym, "config": dict(o.config)},
            })
        return out

    def origin(self) -> str:
        return f"reasoning_gym '{self.options.reasoning_gym}' (seed {self.options.seed})"
