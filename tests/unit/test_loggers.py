"""Logger plugins: TensorBoard writes events; wandb and trackio say what to install when missing."""
import importlib.util

import pytest

from feedback_rl import PluginContext, UserError
from feedback_rl.plugins import build_registry, get_plugin_manager


@pytest.fixture(scope="module")
def reg():
    return build_registry(get_plugin_manager())


def test_tensorboard_writes_event_files(reg, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    cls = reg.get("loggers", "tensorboard")
    lg = cls(cls.Options(), PluginContext(name="tb", run_dir=tmp_path))
    lg.log({"stage": "grpo", "step": 1, "loss": 0.5, "reward/mean": 0.25}, 1)
    lg.log({"stage": "grpo", "step": 2, "loss": 0.25}, 2)
    lg.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert [e.value for e in acc.Scalars("grpo/loss")] == [0.5, 0.25]


@pytest.mark.parametrize("name", ["wandb", "trackio"])
def test_missing_package_is_a_clear_message(reg, name, tmp_path):
    if importlib.util.find_spec(name) is not None:
        pytest.skip(f"{name} is installed")
    cls = reg.get("loggers", name)
    with pytest.raises(UserError, match=f"logger '{name}' needs the {name} package: pip install {name}"):
        cls(cls.Options(), PluginContext(name=name, run_dir=tmp_path))
