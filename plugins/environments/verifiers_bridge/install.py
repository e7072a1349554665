"""What the bridge needs installed (verifiers 0.4, uv, the harness wheelhouse), and uv set to need no network."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType

SETUP = "run `bash scripts/setup-verifiers.sh` and use .venv-verifiers/bin/frl"


def verifiers_v1() -> ModuleType:
    """``verifiers.v1``; a ValueError naming the setup script when verifiers 0.4 is not installed."""
    try:
        import verifiers.v1 as vf
    except ImportError:
        raise ValueError(f"needs verifiers 0.4 (verifiers.v1), which is not installed here: {SETUP}") from None
    return vf


def wheelhouse() -> Path:
    """Where scripts/setup-verifiers.sh keeps the wheels of the harness chat program's dependencies."""
    return Path(sys.prefix) / "uv-wheels"


def offline_uv() -> None:
    """Have verifiers' ``uv sync --script`` (how its null and bash harnesses install their chat program) resolve
    from the wheelhouse with this interpreter, instead of downloading uv, the dependencies or a Python.

    verifiers forces ``UV_OFFLINE=false`` on that command and uv's ``--no-index`` has no environment variable,
    so the default index is the wheelhouse folder itself: uv finds no project pages there and takes the wheels
    from find-links. The runtime inherits this process's environment; a setting the user made already is kept.
    """
    wheels = wheelhouse()
    if not wheels.is_dir():
        raise ValueError(f"no harness wheelhouse at {wheels}: {SETUP}")
    import uv  # the uv binary comes from PyPI with the verifiers extra's setup
    os.environ["PATH"] = os.pathsep.join([str(Path(uv.find_uv_bin()).parent), os.environ.get("PATH", "")])
    settings = {"UV_DEFAULT_INDEX": wheels.as_uri(), "UV_FIND_LINKS": str(wheels), "UV_PYTHON_DOWNLOADS": "never",
                "UV_PYTHON": sys.executable}
    for key, value in settings.items():
        os.environ.setdefault(key, value)
