#!/usr/bin/env bash
# Sets everything up and runs the quickstart recipe (SFT then GRPO on two-digit addition).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "quickstart: training recipes/quickstart.yaml (SFT, then GRPO with a rule checker)"
exec .venv/bin/frl train recipes/quickstart.yaml "$@"
