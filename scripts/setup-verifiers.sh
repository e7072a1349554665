#!/usr/bin/env bash
# Creates .venv-verifiers: feedback_rl with verifiers 0.4 (feedback_rl[verifiers,test]) beside the lean .venv.
# An environment of its own because verifiers pins mcp==2.0.0 and OpenEnv 0.10 needs mcp<2.
# Safe to run again. One line per phase; pip's own output goes to .venv-verifiers/setup.log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
V=.venv-verifiers
START=$SECONDS
mkdir -p "$V"
LOG=$V/setup.log
: > "$LOG"

phase() {   # phase "what" command...: runs quietly, prints one line, shows the log's tail on failure
  local what=$1; shift
  local t=$SECONDS
  if "$@" >>"$LOG" 2>&1; then
    echo "verifiers env: $what ($((SECONDS - t)) s)"
  else
    echo "verifiers env: $what FAILED; the end of $LOG:" >&2
    tail -n 25 "$LOG" >&2
    exit 1
  fi
}

# the install is redone only when pyproject.toml (the pins) or this script changed
STAMP=$(cat pyproject.toml scripts/setup-verifiers.sh | sha1sum | cut -c1-16)
if [ -x "$V/bin/python" ] && [ "$(cat "$V/.installed" 2>/dev/null)" = "$STAMP" ]; then
  echo "verifiers env: up to date ($V)"
else
  rm -f "$V/.installed"
  [ -x "$V/bin/python" ] || phase "venv created" "$PY" -m venv "$V"
  phase "pip upgraded" "$V/bin/python" -m pip install -q --upgrade pip
  # torch first, the CPU build; left to the resolver, a dependency could pull a CUDA build.
  phase "torch 2.13.0 (CPU) installed" "$V/bin/python" -m pip install -q "torch==2.13.0"
  # setuptools' note on editable installs of a remapped layout (plugins/ imports as frl_plugins) is how the
  # mapping works, so it is silenced as in scripts/setup.sh
  phase "feedback_rl[verifiers,test] installed" env PYTHONWARNINGS="ignore:Editable installation" \
    "$V/bin/python" -m pip install -q -e ".[verifiers,test]"
  # verifiers' harnesses (null, bash) run their chat program as a PEP 723 script through `uv sync --script`,
  # and would fetch uv and the script's dependencies at the first rollout. uv comes from PyPI here, and the
  # script's dependencies (read from verifiers' own script header, so they follow its version) are kept in a
  # wheelhouse that the bridge points uv at (UV_NO_INDEX, UV_FIND_LINKS): rollouts need no network.
  phase "uv installed" "$V/bin/python" -m pip install -q "uv>=0.8"
  DEPS=$("$V/bin/python" -c 'import re; from verifiers.v1.harnesses.utils.launch import CHAT_PROGRAM as p
print(" ".join(re.findall(r"\"([^\"]+)\"", p.split("dependencies =")[1].splitlines()[0])))')
  phase "harness wheelhouse $V/uv-wheels ($DEPS)" "$V/bin/python" -m pip download -q -d "$V/uv-wheels" $DEPS
  "$V/bin/python" - 2>>"$LOG" <<'PY'
from importlib.metadata import version
import torch, transformers, verifiers.v1  # noqa: F401 - the import the bridge needs
import feedback_rl
print(f"verifiers env: ready: feedback_rl {feedback_rl.__version__} | verifiers {version('verifiers')} | "
      f"mcp {version('mcp')} | torch {torch.__version__} | transformers {transformers.__version__}")
PY
  echo "$STAMP" > "$V/.installed"
fi
echo "verifiers env: done in $((SECONDS - START)) s"
