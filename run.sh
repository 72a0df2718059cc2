#!/usr/bin/env bash
# SaliencyInspector's front door. Sets up .venv on first use (idempotent), then:
#   ./run.sh demo [--out DIR]     the main job end to end (phantom CT -> classifier -> saliency -> metrics -> report)
#   ./run.sh test [pytest args]   the whole test suite
#   ./run.sh cli ARGS...          any saliency-inspector sub-command
#   ./run.sh bench [--full]       the benchmarks (ratios against peers, one run; quick by default, ≤ 2 min)
set -euo pipefail
# No cd: the caller's working directory is kept, so relative paths (--out run/) land where the user
# stands. The repository and its .venv are reached by absolute path.
ROOT="$(cd "$(dirname "$0")" && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.setup-stamp"
LOG="$VENV/setup.log"
WANT=$(cat "$ROOT/pyproject.toml" "$ROOT/constraints-dev.txt" | sha1sum | cut -d' ' -f1)

step() {  # one progress line per step; pip's own output goes to the log
  echo "[setup] $1 ($(date +%H:%M:%S); details in $LOG)" >&2
}

setup() {
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then return; fi
  echo "[setup] creating $VENV (once, a few minutes; later runs re-use it)" >&2
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  : > "$LOG"
  step "1/3 upgrading pip"
  "$VENV/bin/python" -m pip install --upgrade pip >> "$LOG" 2>&1 || { tail -20 "$LOG" >&2; exit 1; }
  # torch first, pinned, so nothing below can pull a multi-GB CUDA build.
  step "2/3 installing torch 2.13.0 (CPU, about 200 MB)"
  "$VENV/bin/python" -m pip install -c "$ROOT/constraints-dev.txt" "torch==2.13.0" >> "$LOG" 2>&1 \
    || { tail -20 "$LOG" >&2; exit 1; }
  step "3/3 installing SaliencyInspector and MONAI, Captum, SimpleITK, VTK, slicer-core"
  "$VENV/bin/python" -m pip install -c "$ROOT/constraints-dev.txt" -e "$ROOT[test]" >> "$LOG" 2>&1 \
    || { tail -20 "$LOG" >&2; exit 1; }
  echo "$WANT" > "$STAMP"
  echo "[setup] done" >&2
}

cmd=${1:-}
shift || true
case "$cmd" in
  demo)  setup; exec "$VENV/bin/saliency-inspector" demo "$@" ;;
  test)  setup; cd "$ROOT"; exec "$VENV/bin/python" -m pytest "$@" ;;  # the suite runs from the repository
  cli)   setup; exec "$VENV/bin/saliency-inspector" "$@" ;;
  bench) setup  # quick by default; --full (and any other arguments) go to the benches that take --full
         for b in "$ROOT"/benchmarks/bench_*.py; do
           if grep -q -- '"--full"' "$b"; then "$VENV/bin/python" "$b" "$@"; else "$VENV/bin/python" "$b"; fi
         done ;;
  setup) setup ;;
  *) echo "usage: ./run.sh demo|test|cli|bench|setup [args]" >&2; exit 2 ;;
esac
