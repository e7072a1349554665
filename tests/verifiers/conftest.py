"""The verifiers tier (bash scripts/test.sh --verifiers): runs in .venv-verifiers, where verifiers 0.4 is installed.

Its tasksets are modules in tasksets/, importable by id here and in the subprocesses the tests start."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest



def has_verifiers() -> bool:
    """Whether verifiers 0.4 is installed: ``verifiers.v1``, since this folder, named verifiers, is itself
    importable as a namespace package ``verifiers`` when pytest puts tests/ on sys.path."""
    try:
        return importlib.util.find_spec("verifiers.v1") is not None
    except ImportError:
        return False


# The default tier runs in .venv, which has no verifiers: there this folder is left out, not failed on import.
if not has_verifiers():
    collect_ignore_glob = ["test_*.py"]

TASKSETS = str(Path(__file__).parent / "tasksets")
sys.path.insert(0, TASKSETS)
sys.path.append(str(Path(__file__).parents[1] / "integration"))   # plugin_site, shared with the default tier
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [TASKSETS, os.environ.get("PYTHONPATH")]))


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Any connection that leaves the machine fails (a proxy on a closed port), and uv's cache starts empty, so a
    harness program whose dependencies are missing from the wheelhouse cannot be fetched or found cached."""
    for key in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        monkeypatch.setenv(key, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
