"""Metrics as JSON lines in ``runs/<name>/metrics.jsonl``: always on, one line per logged step."""
from __future__ import annotations

import json
import math

from feedback_rl import Logger, PluginOptions, hookimpl


class JsonlLogger(Logger):
    name = "jsonl"

    class Options(PluginOptions):
        filename: str = "metrics.jsonl"

    def __init__(self, options, context):
        super().__init__(options, context)
        self._file = open(context.run_dir / options.filename, "a", buffering=1)

    def log(self, metrics, step):
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        self._file.write(json.dumps({"global_step": step, **clean}) + "\n")

    def close(self):
        self._file.close()


@hookimpl
def frl_register_loggers(register):
    register(JsonlLogger)
