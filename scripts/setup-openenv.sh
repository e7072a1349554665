#!/usr/bin/env bash
# Creates .venv-openenv: feedback_rl with OpenEnv (feedback_rl[openenv]) beside the lean .venv. OpenEnv needs
# mcp<2 and verifiers pins mcp 2, so the two bridges cannot share one environment.
# Safe to run again. One line per phase; pip's own output goes to .venv-openenv/setup.log.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/side-env.sh openenv
if ! up_to_date; then
  base_install
  # pytest alone rather than the [test] extra: the tier needs no browser, tensorboard or reasoning-gym.
  # setuptools' note about editable installs of a remapped layout is how plugins/ imports as frl_plugins.
  phase "feedback_rl[openenv] and pytest installed" env PYTHONWARNINGS="ignore:Editable installation" \
    "$V/bin/python" -m pip install -q -e ".[openenv]" "pytest>=8"
  ready <<'PY'
import importlib.metadata as md
import torch, transformers
from openenv.core import EnvClient, Environment, create_app  # noqa: F401 - what the bridge and its tests use
import feedback_rl
print(f"openenv env: ready: feedback_rl {feedback_rl.__version__} | openenv {md.version('openenv')} | "
      f"mcp {md.version('mcp')} | torch {torch.__version__} | transformers {transformers.__version__}")
PY
fi
finish
