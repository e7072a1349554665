# Sourced by scripts/setup-{vllm,openenv,verifiers}.sh: a virtualenv of its own beside the lean .venv, for a tier
# whose pins cannot share it. `source scripts/lib/side-env.sh NAME` sets V=.venv-NAME and LOG, and defines:
#   phase "what" command...  runs quietly into $LOG, prints one line "NAME env: what (N s)", or the log's tail
#   up_to_date               true (and says so) when the last install used this pyproject.toml and these scripts
#   base_install             the venv, pip, and torch 2.13.0 (the CPU build: a looser pin would pull CUDA packages)
#   ready                    runs the Python on stdin in the env (its check and its one-line summary), then
#                            records the install; finish prints the total time
PY=${PYTHON:-python3}
NAME=$1
V=.venv-$NAME
START=$SECONDS
mkdir -p "$V"
LOG=$V/setup.log
: > "$LOG"
STAMP=$(cat pyproject.toml "scripts/setup-$NAME.sh" scripts/lib/side-env.sh | sha1sum | cut -c1-16)

phase() {
  local what=$1; shift
  local t=$SECONDS
  if "$@" >>"$LOG" 2>&1; then
    echo "$NAME env: $what ($((SECONDS - t)) s)"
  else
    echo "$NAME env: $what FAILED; the end of $LOG:" >&2
    tail -n 25 "$LOG" >&2
    exit 1
  fi
}

up_to_date() {
  if [ -x "$V/bin/python" ] && [ "$(cat "$V/.installed" 2>/dev/null)" = "$STAMP" ]; then
    echo "$NAME env: up to date ($V)"
    return 0
  fi
  rm -f "$V/.installed"
  return 1
}

base_install() {
  [ -x "$V/bin/python" ] || phase "venv created" "$PY" -m venv "$V"
  phase "pip upgraded" "$V/bin/python" -m pip install -q --upgrade pip
  phase "torch 2.13.0 (CPU) installed" "$V/bin/python" -m pip install -q "torch==2.13.0"
}

ready() {
  "$V/bin/python" - 2>>"$LOG"
  echo "$STAMP" > "$V/.installed"
}

finish() {
  echo "$NAME env: done in $((SECONDS - START)) s"
}
