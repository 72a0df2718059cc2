#!/usr/bin/env bash
# SaliencyInspector's front door. Sets up .venv on first use (idempotent), then:
#   ./run.sh demo [--out DIR]     the main job end to end (phantom CT -> classifier -> saliency -> metrics -> report)
#   ./run.sh test [pytest args]   the whole test suite
#   ./run.sh cli ARGS...          any saliency-inspector sub-command
#   ./run.sh bench [--full]       the benchmarks (ratios against peers, one run; quick by default, ≤ 2 min)
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
STAMP="$VENV/.setup-stamp"
WANT=$(cat pyproject.toml constraints-dev.txt | sha1sum | cut -d' ' -f1)

setup() {
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then return; fi
  echo "[setup] creating $VENV (once; later runs re-use it)" >&2
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch first, pinned, so nothing below can pull a multi-GB CUDA build.
  "$VENV/bin/python" -m pip install -q -c constraints-dev.txt "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q -c constraints-dev.txt -e ".[test]"
  echo "$WANT" > "$STAMP"
}

cmd=${1:-}
shift || true
case "$cmd" in
  demo)  setup; exec "$VENV/bin/saliency-inspector" demo "$@" ;;
  test)  setup; exec "$VENV/bin/python" -m pytest "$@" ;;
  cli)   setup; exec "$VENV/bin/saliency-inspector" "$@" ;;
  bench) setup  # quick by default; --full (and any other arguments) go to the benches that take --full
         for b in benchmarks/bench_*.py; do
           if grep -q -- '"--full"' "$b"; then "$VENV/bin/python" "$b" "$@"; else "$VENV/bin/python" "$b"; fi
         done ;;
  setup) setup ;;
  *) echo "usage: ./run.sh demo|test|cli|bench|setup [args]" >&2; exit 2 ;;
esac
