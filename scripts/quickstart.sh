#!/usr/bin/env bash
# Sets everything up and runs the quickstart recipe (SFT then GRPO on two-digit addition).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/frl train recipes/quickstart.yaml "$@"
