#!/usr/bin/env bash
# Creates .venv-verifiers: feedback_rl with verifiers 0.4 (feedback_rl[verifiers,test]) beside the lean .venv.
# An environment of its own because verifiers pins mcp==2.0.0 and OpenEnv 0.10 needs mcp<2.
# Safe to run again. One line per phase; pip's own output goes to .venv-verifiers/setup.log.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/side-env.sh verifiers
if ! up_to_date; then
  base_install
  # setuptools' note on editable installs of a remapped layout (plugins/ imports as frl_plugins) is how the
  # mapping works, so it is silenced as in scripts/setup.sh
  phase "feedback_rl[verifiers,test] installed" env PYTHONWARNINGS="ignore:Editable installation" \
    "$V/bin/python" -m pip install -q -e ".[verifiers,test]"
  # verifiers' harnesses (null, bash) run their chat program as a PEP 723 script through `uv sync --script`,
  # and would fetch uv and the script's dependencies at the first rollout. uv comes from PyPI here, and the
  # script's dependencies (read from verifiers' own script header, so they follow its version) are kept in a
  # wheelhouse that the bridge points uv at (UV_DEFAULT_INDEX, UV_FIND_LINKS): rollouts need no network.
  phase "uv installed" "$V/bin/python" -m pip install -q "uv>=0.8"
  DEPS=$("$V/bin/python" -c 'import re; from verifiers.v1.harnesses.utils.launch import CHAT_PROGRAM as p
print(" ".join(re.findall(r"\"([^\"]+)\"", p.split("dependencies =")[1].splitlines()[0])))')
  phase "harness wheelhouse $V/uv-wheels ($DEPS)" "$V/bin/python" -m pip download -q -d "$V/uv-wheels" $DEPS
  ready <<'PY'
from importlib.metadata import version
import torch, transformers, verifiers.v1  # noqa: F401 - the import the bridge needs
import feedback_rl
print(f"verifiers env: ready: feedback_rl {feedback_rl.__version__} | verifiers {version('verifiers')} | "
      f"mcp {version('mcp')} | torch {torch.__version__} | transformers {transformers.__version__}")
PY
fi
finish
