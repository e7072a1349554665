#!/usr/bin/env bash
# The GPU tier on a machine with a CUDA GPU, from scratch, in one call:
#
#   bash scripts/gpu-check.sh [PHASES] [-- PYTEST-ARGS]     PHASES: setup, test, bench (default: all three)
#
# setup: .venv-gpu with CUDA torch 2.13.0 and vllm 0.32.0 (which pins that torch) from PyPI, then feedback_rl
#        (editable) with its test extras. A Python whose torch already sees CUDA is used instead of a download
#        (GPU_CHECK_PYTHON, else python3): the venv then sits over its site-packages. Without a registry,
#        GPU_CHECK_WHEELS=DIR installs from a folder of wheels; failing that, feedback_rl alone goes over what
#        that Python has, and setup names any dependency still missing. GPU_CHECK_VLLM=0 leaves vLLM out
#        (its tests skip), as does a failed install (said); one that installs but does not import fails its
#        tests, and env.txt says why.
# test:  pytest tests/gpu -m gpu (every optimizer and built-in reward kind two steps in bf16, the vLLM
#        backend, --num-processes 1 and accelerate launch, the checkpoint's CUDA RNG, vLLM sleep mode).
# bench: benchmarks/bench_gpu_steps.py: step times in fp32 and bf16.
#
# Everything it measures goes to $OUT (default ./gpu-check-out): nvidia-smi.txt, env.txt, setup.log,
# pytest.log, junit.xml, figures.jsonl (one line per tier run: wall time, step time, peak CUDA memory),
# bench.md and bench.json, summary.md. Exit code: the first phase that failed (pytest's own code for test).
# GPU_CHECK_VENV names another environment (default .venv-gpu). Under a 10-minute limit per call, run
# `setup` in one call and `test bench` in the next on the same machine (.venv-gpu is kept while it is warm).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$OUT"
V=${GPU_CHECK_VENV:-.venv-gpu}
PHASES=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do PHASES+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#PHASES[@]} -eq 0 ] && PHASES=(setup test bench)
START=$SECONDS
RC=0

say() { echo "gpu-check: $*" | tee -a "$OUT/summary.md"; }
has_cuda_torch() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; }
quiet() {  # quiet "what" command...: the command's output goes to setup.log; one line says how it went
  local what=$1 t=$SECONDS; shift
  if "$@" >>"$OUT/setup.log" 2>&1; then say "$what ($((SECONDS - t)) s)"; return 0; fi
  say "$what FAILED ($((SECONDS - t)) s); the end of setup.log:"; tail -n 20 "$OUT/setup.log" | tee -a "$OUT/summary.md"
  return 1
}

setup() {
  (nvidia-smi || echo "no nvidia-smi") >"$OUT/nvidia-smi.txt" 2>&1
  if [ -x "$V/bin/python" ] && has_cuda_torch "$V/bin/python" && "$V/bin/python" -c "import feedback_rl" 2>/dev/null; then
    say "setup: $V is ready (kept)"
  else
    local base=${GPU_CHECK_PYTHON:-python3}
    if has_cuda_torch "$base"; then
      quiet "setup: $V over $base's site-packages (its torch sees CUDA)" "$base" -m venv --system-site-packages "$V" || return 1
    else
      quiet "setup: $V created" "$base" -m venv "$V" || return 1
      quiet "setup: pip upgraded" "$V/bin/python" -m pip install -q --upgrade pip
    fi
    if [ "${GPU_CHECK_VLLM:-1}" = "1" ] && ! "$V/bin/python" -c "import vllm" 2>/dev/null; then
      # together, so pip settles one torch: vllm 0.32.0 pins torch 2.13.0, the project's own pin
      quiet "setup: torch 2.13.0 (CUDA) and vllm 0.32.0 installed" \
        "$V/bin/python" -m pip install -q "torch==2.13.0" "vllm==0.32.0" || say "setup: vLLM left out (its tests skip)"
    fi
    local src=()
    [ -n "${GPU_CHECK_WHEELS:-}" ] && src=(--no-index --find-links "$GPU_CHECK_WHEELS")
    if ! quiet "setup: feedback_rl (editable) with the test extras installed" env PYTHONWARNINGS="ignore:Editable installation" \
        "$V/bin/python" -m pip install -q ${src[@]+"${src[@]}"} -e ".[test]"; then
      # no registry reachable: what the base Python already has may be enough
      quiet "setup: feedback_rl (editable) installed alone, over what $V already has" env PYTHONWARNINGS="ignore:Editable installation" \
        "$V/bin/python" -m pip install -q --no-deps --no-build-isolation -e . || return 1
    fi
  fi
  if "$V/bin/python" -c "import vllm" 2>/dev/null && ! "$V/bin/python" -c "from vllm import LLM" >>"$OUT/setup.log" 2>&1; then
    # scripts/setup-vllm.sh saw media libraries built for another torch break this import; text needs none
    quiet "setup: torchvision/torchaudio/torchcodec removed (they broke 'from vllm import LLM')" \
      "$V/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec
  fi
  "$V/bin/python" - >"$OUT/env.txt" 2>&1 <<'PY'
import importlib.util
import torch, transformers, feedback_rl
print(f"feedback_rl {feedback_rl.__version__} | torch {torch.__version__} (CUDA {torch.version.cuda}) | "
      f"transformers {transformers.__version__}")
print("GPU:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none visible to torch")
if importlib.util.find_spec("vllm"):
    try:
        from vllm import LLM  # noqa: F401
        import vllm
        print("vllm", vllm.__version__)
    except Exception as e:  # noqa: BLE001 - said, and its tests skip or fail loudly
        print("vllm does not import:", type(e).__name__, e)
else:
    print("vllm: not installed (its tests skip)")
PY
  sed 's/^/gpu-check: env: /' "$OUT/env.txt" | tee -a "$OUT/summary.md"
  has_cuda_torch "$V/bin/python" || { say "setup: torch in $V does not see a CUDA device"; return 1; }
  local missing
  missing=$("$V/bin/python" -c 'import importlib.util as u; print(" ".join(m for m in ("transformers", "accelerate",
    "pluggy", "openai", "yaml", "pydantic", "click", "tqdm", "safetensors", "numpy", "matplotlib", "starlette",
    "uvicorn", "peft", "datasets", "pytest") if u.find_spec(m) is None))')
  [ -z "$missing" ] || { say "setup: $V lacks: $missing (no registry reachable? GPU_CHECK_WHEELS=DIR installs from wheels)"; return 1; }
}

tests() {
  rm -f "$OUT/figures.jsonl"
  local t=$SECONDS code
  FRL_GPU_FIGURES="$OUT/figures.jsonl" OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} "$V/bin/python" -m pytest tests/gpu -m gpu \
    -p no:cacheprovider -ra --durations=0 --junitxml="$OUT/junit.xml" "$@" >"$OUT/pytest.log" 2>&1
  code=$?
  say "test: pytest tests/gpu -m gpu: exit $code in $((SECONDS - t)) s: $(tail -n 1 "$OUT/pytest.log")"
  grep -E "^(FAILED|ERROR|SKIPPED)" "$OUT/pytest.log" | sed 's/^/gpu-check:   /' | tee -a "$OUT/summary.md"
  if [ -s "$OUT/figures.jsonl" ]; then
    "$V/bin/python" - "$OUT/figures.jsonl" <<'PY' | tee -a "$OUT/summary.md"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print("\n| run | wall (s) | median step (s) | peak CUDA (MiB) | logprob mismatch (max) |\n|---|---|---|---|---|")
for r in rows:
    gap = r.get("rollout/logprob_mismatch")
    print(f"| {r['run']} | {r['wall_s']} | {r['step_s_median']} | {r['cuda_peak_mib']} | "
          f"{'' if gap is None else f'{gap:.2e}'} |")
PY
  fi
  return $code
}

bench() {
  local t=$SECONDS
  if "$V/bin/python" benchmarks/bench_gpu_steps.py --steps "${GPU_CHECK_BENCH_STEPS:-30}" --json "$OUT/bench.json" \
      >"$OUT/bench.md" 2>>"$OUT/bench.log"; then
    say "bench: step times ($((SECONDS - t)) s):"; tee -a "$OUT/summary.md" <"$OUT/bench.md"
  else
    say "bench: FAILED; the end of bench.log:"; tail -n 20 "$OUT/bench.log" | tee -a "$OUT/summary.md"; return 1
  fi
}

for phase in "${PHASES[@]}"; do
  case $phase in
    setup) setup || { RC=1; say "setup failed: nothing else can run"; break; } ;;
    test) tests "$@"; code=$?; [ $RC -eq 0 ] && RC=$code ;;
    bench) bench || { [ $RC -eq 0 ] && RC=1; } ;;
    *) say "unknown phase '$phase' (expected: setup, test, bench)"; exit 2 ;;
  esac
done
say "done in $((SECONDS - START)) s, exit $RC; figures and logs in $OUT"
exit $RC
