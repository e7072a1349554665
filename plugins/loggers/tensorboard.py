"""TensorBoard event files under ``runs/<name>/tensorboard`` (needs the `tensorboard` package)."""
from __future__ import annotations

from feedback_rl import Logger, PluginOptions, UserError, hookimpl


class TensorBoardLogger(Logger):
    name = "tensorboard"

    class Options(PluginOptions):
        subdir: str = "tensorboard"

    def __init__(self, options, context):
        super().__init__(options, context)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("logger 'tensorboard' needs the tensorboard package: pip install tensorboard") from None
        self._writer = SummaryWriter(log_dir=str(context.run_dir / options.subdir))

    def log(self, metrics, step):
        stage = metrics.get("stage", "")
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                self._writer.add_scalar(f"{stage}/{key}" if stage else key, value, step)

    def close(self):
        self._writer.close()


@hookimpl
def frl_register_loggers(register):
    register(TensorBoardLogger)
