"""Devices belong to the core: every optimizer receives its batch on the policy's device and never moves a
tensor or makes one on the default device. Caught on a CPU-only machine: a spy (a torch function mode)
records every tensor an optimizer plugin's own code creates without naming a device, or moves
(``.to``, ``.cuda``, ``.cpu``), while each built-in optimizer runs ``prepare``, its minibatches, ``loss``
and a backward through the core's batch. On a GPU either would put a tensor on the CPU beside a policy on
CUDA (SFT, DPO, KTO and RM once returned their batch on the CPU: four of six could not take a step).
tests/gpu/ runs the same optimizers on CUDA when one is lent."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from feedback_rl import PluginContext, SamplingParams, ScalarFeedback
from feedback_rl.loop.batch import for_optimizer
from feedback_rl.loop.feedback import from_rows
from feedback_rl.modeling.roles import build_models

ROOT = Path(__file__).resolve().parents[2]
OPTIMIZERS = ROOT / "plugins" / "optimizers"
FACTORIES = {torch.tensor, torch.zeros, torch.ones, torch.full, torch.empty, torch.arange, torch.rand,
             torch.randn, torch.randint, torch.as_tensor, torch.eye, torch.linspace}
MOVES = {"to", "cuda", "cpu"}


class DeviceSpy(TorchFunctionMode):
    """Records (file:line, what) for tensors made on the default device or moved, by code under ``watch``."""

    def __init__(self, watch: Path):
        super().__init__()
        self.watch, self.offences = str(watch), []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        caller = sys._getframe(1)
        if caller.f_code.co_filename.startswith(self.watch):
            where = f"{Path(caller.f_code.co_filename).name}:{caller.f_lineno}"
            if func in FACTORIES and kwargs.get("device") is None:
                self.offences.append(f"{where}: torch.{func.__name__} without a device")
            if getattr(func, "__name__", "") in MOVES and getattr(func, "__self__", None) is None \
                    and args and isinstance(args[0], torch.Tensor):
                self.offences.append(f"{where}: Tensor.{func.__name__}")
        return func(*args, **kwargs)


@pytest.fixture(scope="module")
def policy_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def feedback_for(shape: str, tok) -> object:
    rows = [{"prompt": f"{a}+{b}=", "completion": str(a + b), "label": a % 2 == 0,
             "chosen": str(a + b), "rejected": str(a + b + 1)} for a, b in ((1, 2), (3, 4), (5, 6), (7, 8))]
    if shape == "scalar":   # two groups of two, as sampled, with behaviour log-probs
        demos = from_rows("demonstrations", rows, tok)
        for k, r in enumerate(demos.rollouts):
            r.group, r.policy_version = k // 2, 0
            r.logprobs = torch.full((len(r.completion_ids),), -1.0)
        return ScalarFeedback(demos.rollouts, torch.tensor([1.0, 0.0, 0.5, 0.25]))
    if shape == "binary":
        return from_rows("binary", rows, tok)
    return from_rows(shape, rows, tok)


CASES = {"sft": {}, "dpo": {}, "kto": {}, "rm": {"margin_coef": 0.5}, "grpo": {"beta": 0.1, "num_iterations": 2},
         "ppo": {"ptx_data": {"generator": "addition", "size": 8}, "ptx_coef": 0.5}}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_optimizer_trains_without_making_or_moving_a_tensor_itself(name, registry, policy_and_tokenizer,
                                                                        tmp_path):
    import copy
    model, tok = policy_and_tokenizer
    cls = registry.get("optimizers", name)
    ctx = PluginContext(name=name, run_dir=tmp_path, stage="s", sampling=SamplingParams(max_new_tokens=4),
                        is_cap=2.0 if cls.importance_weighted else None, recipe_dir=tmp_path)
    optimizer = cls(cls.Options(**CASES[name]), ctx)
    models = build_models(optimizer.roles(), copy.deepcopy(model), tok)
    fb = feedback_for(cls.feedback, tok)
    spy = DeviceSpy(OPTIMIZERS)
    with spy:
        batch = for_optimizer(optimizer, fb, models)
        losses = []
        for mb in optimizer.minibatches(optimizer.prepare(batch, models)):
            loss, _ = optimizer.loss(mb, models)
            loss.backward()
            losses.append(loss)
    assert spy.offences == []
    assert losses and all(torch.isfinite(x) for x in losses)
    if cls.importance_weighted:
        assert batch.is_weights is not None and batch.is_weights.device == models.device


def test_the_spy_catches_a_tensor_made_on_the_default_device_or_moved(tmp_path):
    offender = OPTIMIZERS / "_probe_device_offender.py"
    offender.write_text("import torch\n\ndef f(x):\n    y = torch.tensor([1.0, 2.0])\n"
                        "    z = torch.zeros(2, device=x.device)\n    return x.to(y.device) + y + z\n")
    try:
        import importlib.util
        spec = importlib.util.spec_from_file_location("_probe_device_offender", offender)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        spy = DeviceSpy(OPTIMIZERS)
        with spy:
            module.f(torch.ones(2))
    finally:
        offender.unlink()
    assert [o.split(": ", 1)[1] for o in spy.offences] == ["torch.tensor without a device", "Tensor.to"]


def test_no_optimizer_plugin_moves_tensors_or_calls_importance_helpers():
    """What the spy cannot see when a code path does not run: the source itself."""
    helpers = {"place_behaviour", "behaviour_logprobs", "backend_correction", "truncated_weights",
               "truncated_is_weights", "mismatch_metrics", "effective_cap", "effective_is_cap"}
    found = []
    for path in sorted(OPTIMIZERS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MOVES:
                found.append(f"{path.name}:{node.lineno}: .{node.func.attr}()")
            name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
            if name in helpers:
                found.append(f"{path.name}:{node.lineno}: {name}")
    assert found == []
