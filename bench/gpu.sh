#!/usr/bin/env bash
# bench/gpu.sh: on a machine with a CUDA GPU, install what is missing, run the tests marked
# `gpu`, and measure the population trainer and `zoo generate` into one JSON
# (zoo/bench_gpu.py says what each figure is). Sized to finish inside 10 minutes on one
# H100/H200: about a minute of tests, then --budget-s of measurements (default 420).
#
#   bench/gpu.sh [--out FILE] [--budget-s S]   # on the GPU machine (default FILE: bench-gpu.json)
#   bench/gpu.sh --dry-run --out FILE          # every step at toy size on the CPU (tests/test_gpu.py runs it)
#
# PYTHON picks the interpreter (default: python). The GPU machine may have no package index:
# when torch, zoo's dependencies and pytest already import, nothing is installed.
set -uo pipefail

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python}
DRY=() OUT=bench-gpu.json BUDGET=420
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=(--dry-run) ;;
    --out) [ $# -ge 2 ] || { echo "bench/gpu.sh: --out needs a file" >&2; exit 2; }; OUT=$2; shift ;;
    --budget-s) [ $# -ge 2 ] || { echo "bench/gpu.sh: --budget-s needs seconds" >&2; exit 2; }; BUDGET=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench/gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
cd "$ROOT" || exit 1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # Ray's actors import zoo from here too
step() { echo "== bench/gpu.sh: $* ($(date -u +%H:%M:%S))" >&2; }

step "1/3 install"
MODULES="torch ray pyarrow pydantic rich yaml safetensors huggingface_hub pytest zoo"
FOUND="import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))"
if "$PY" -c "$FOUND" $MODULES; then
  echo "torch, zoo's dependencies and pytest are installed: nothing to install" >&2
elif [ ${#DRY[@]} -gt 0 ]; then
  echo "bench/gpu.sh: --dry-run installs nothing, and one of these is missing: $MODULES" >&2; exit 1
else
  "$PY" -m pip install "torch==2.13.0" -e ".[test]" || { echo "bench/gpu.sh: pip install failed" >&2; exit 1; }
fi

step "2/3 tests marked gpu"
LOG=$(mktemp)
LIMIT=(); command -v timeout >/dev/null && LIMIT=(timeout 240)  # a hung test must not eat the measurements' time
"${LIMIT[@]}" "$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider 2>&1 | tee "$LOG" >&2
TESTS_RC=${PIPESTATUS[0]}

step "3/3 measurements (budget ${BUDGET} s)"
"$PY" -m zoo.bench_gpu --out "$OUT" --budget-s "$BUDGET" --tests-rc "$TESTS_RC" --tests-log "$LOG" "${DRY[@]}"
RC=$?
rm -f "$LOG"
step "done: $OUT (tests rc $TESTS_RC, measurements rc $RC)"
[ "$RC" -eq 0 ] && [ "$TESTS_RC" -eq 0 ]
