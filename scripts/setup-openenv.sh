#!/usr/bin/env bash
# Creates .venv-openenv: feedback_rl with OpenEnv (feedback_rl[openenv]) beside the lean .venv. OpenEnv needs
# mcp<2 and verifiers pins mcp 2, so the two bridges cannot share one environment.
# Safe to run again. One line per phase; pip's own output goes to .venv-openenv/setup.log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
V=.venv-openenv
START=$SECONDS
mkdir -p "$V"
LOG=$V/setup.log
: > "$LOG"

phase() {   # phase "what" command...: runs quietly, prints one line, shows the log's tail on failure
  local what=$1; shift
  local t=$SECONDS
  if "$@" >>"$LOG" 2>&1; then
    echo "openenv env: $what ($((SECONDS - t)) s)"
  else
    echo "openenv env: $what FAILED; the end of $LOG:" >&2
    tail -n 25 "$LOG" >&2
    exit 1
  fi
}

# the install is redone only when pyproject.toml (the pins) or this script changed
STAMP=$(cat pyproject.toml scripts/setup-openenv.sh | sha1sum | cut -c1-16)
if [ -x "$V/bin/python" ] && [ "$(cat "$V/.installed" 2>/dev/null)" = "$STAMP" ]; then
  echo "openenv env: up to date ($V)"
else
  rm -f "$V/.installed"
  [ -x "$V/bin/python" ] || phase "venv created" "$PY" -m venv "$V"
  phase "pip upgraded" "$V/bin/python" -m pip install -q --upgrade pip
  # torch first, the CPU build; a looser pin would pull CUDA packages.
  phase "torch 2.13.0 (CPU) installed" "$V/bin/python" -m pip install -q "torch==2.13.0"
  # pytest alone rather than the [test] extra: the tier needs no browser, tensorboard or reasoning-gym.
  # setuptools' note about editable installs of a remapped layout is how plugins/ imports as frl_plugins.
  phase "feedback_rl[openenv] and pytest installed" env PYTHONWARNINGS="ignore:Editable installation" \
    "$V/bin/python" -m pip install -q -e ".[openenv]" "pytest>=8"
  "$V/bin/python" - 2>>"$LOG" <<'PY'
import importlib.metadata as md
import torch, transformers
from openenv.core import EnvClient, Environment, create_app  # noqa: F401 - what the bridge and its tests use
import feedback_rl
print(f"openenv env: ready: feedback_rl {feedback_rl.__version__} | openenv {md.version('openenv')} | "
      f"mcp {md.version('mcp')} | torch {torch.__version__} | transformers {transformers.__version__}")
PY
  echo "$STAMP" > "$V/.installed"
fi
echo "openenv env: done in $((SECONDS - START)) s"
