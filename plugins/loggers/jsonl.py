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
        self._path = context.run_dir / options.filename
        self._file = open(self._path, "a", buffering=1)
        self._failed = False

    def log(self, metrics, step):
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        try:
            self._file.write(json.dumps({"global_step": step, **clean}) + "\n")
        except OSError as e:  # a full disk: the error names the file (a write error alone names none)
            self._failed = True
            raise OSError(e.errno, e.strerror, str(self._path)) from None

    def close(self):
        try:
            self._file.close()
        except OSError:
            if not self._failed:  # after a failed write, closing retries the same lost line: said once already
                raise


@hookimpl
def frl_register_loggers(register):
    register(JsonlLogger)
