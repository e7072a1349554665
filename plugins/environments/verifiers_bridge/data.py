"""The ``verifiers`` data source: one row per task of an installed verifiers v1 taskset."""
from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from feedback_rl import PluginOptions
from feedback_rl.data import DataSource

from . import tasksets


class VerifiersData(DataSource):
    """One row per task of a verifiers v1 taskset, in its order: ``{prompt, verifiers: {taskset, config, idx}}``.

    ``prompt`` is the task's opening turns (for the logs); ``verifiers`` is what the agent needs to play the same
    task again. ``size`` takes the first rows."""

    name = "verifiers"

    class Options(PluginOptions):
        verifiers: str = Field(description="the taskset's id: an installed package exporting a verifiers.v1 "
                                           "Taskset subclass in __all__")
        config: dict[str, Any] = Field({}, description="the taskset config's own keys")
        size: int | None = Field(None, ge=1, description="rows to take (default: every task)")

        @model_validator(mode="after")
        def _loads(self) -> "VerifiersData.Options":
            tasksets.check(self.verifiers, self.config)  # a recipe naming a missing taskset fails before a model loads
            return self

    def rows(self) -> list[dict[str, Any]]:
        o = self.options
        return [{"prompt": tasksets.opening_turns(task),
                 "verifiers": {"taskset": o.verifiers, "config": o.config, "idx": task.data.idx}}
                for task in tasksets.tasks(o.verifiers, o.config, o.size)]
