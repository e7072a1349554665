"""A test's plugin installed without touching the environment: its module and a dist-info in a folder for
PYTHONPATH (importlib.metadata finds entry points on sys.path), as `pip install` would leave them."""
from __future__ import annotations

import shutil
from pathlib import Path


def install(site: Path, module_file: Path, module: str, entry: str) -> Path:
    """``module_file`` as module ``module``, registered under the ``feedback_rl`` entry point ``entry``; the
    folder to put on PYTHONPATH."""
    dist = site / f"{module}-0.1.dist-info"
    dist.mkdir(parents=True)
    shutil.copy(module_file, site / f"{module}.py")
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[feedback_rl]\n{entry} = {module}\n")
    return site
