#!/usr/bin/env bash
# Sets everything up and runs the default test tiers (slow and GPU tiers are skipped; --runslow adds them).
# --vllm (first argument): builds .venv-vllm (scripts/setup-vllm.sh) and runs the vLLM tier there instead.
# --openenv (first argument): builds .venv-openenv (scripts/setup-openenv.sh) and runs the OpenEnv tier there.
# --verifiers (first argument): builds .venv-verifiers (scripts/setup-verifiers.sh) and runs the verifiers tier there.
# --precision (first argument): the tests marked precision (learning under bf16/fp16, emulated on most CPUs).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--vllm" ]; then
  shift
  bash scripts/setup-vllm.sh
  # vllm, torch.jit and trio warn about their own internals on every run; the tier's output stays a line a phase
  exec .venv-vllm/bin/python -m pytest -p no:warnings tests/vllm_tier tests/unit/test_vllm_backend.py \
    tests/gpu/test_vllm.py "$@"
fi
if [ "${1:-}" = "--openenv" ]; then
  shift
  bash scripts/setup-openenv.sh
  exec .venv-openenv/bin/python -m pytest tests/openenv_tier "$@"
fi
if [ "${1:-}" = "--verifiers" ]; then
  shift
  bash scripts/setup-verifiers.sh
  exec .venv-verifiers/bin/python -m pytest -p no:warnings tests/verifiers "$@"
fi
bash scripts/setup.sh
if [ "${1:-}" = "--precision" ]; then
  shift
  echo "test: running the precision tier (learning under bf16 and fp16)"
  exec .venv/bin/python -m pytest --precision tests/integration/test_precision.py "$@"
fi
# Browser tests drive Debian's chromium; install it when we can (root, apt reachable).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "test: installing chromium for the browser tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
    >/dev/null 2>&1 || echo "note: chromium could not be installed; browser tests will be skipped"
fi
echo "test: running the default test tiers"
exec .venv/bin/python -m pytest "$@"
