#!/usr/bin/env bash
# Runs the benchmarks (docs/performance.md): every figure beside a baseline measured in the same run,
# on a fresh database of one PostgreSQL (embedded in a temporary directory unless --database-url).
#   scripts/bench.sh                full run (about 5 minutes on 2 cores)
#   scripts/bench.sh --quick        fewer iterations, the same table
#   scripts/bench.sh --tests        also runs the slow harness test (every benchmark at its smallest size)
# Other arguments go to `python -m bench` (--only NAME ..., --json FILE, --markdown FILE, --database-url URL).
set -euo pipefail
cd "$(dirname "$0")/.."
LACE_SKIP_NPM=${LACE_SKIP_NPM:-1} scripts/bootstrap.sh
args=()
tests=0
for a in "$@"; do
  if [ "$a" = "--tests" ]; then tests=1; else args+=("$a"); fi
done
if [ "$tests" = 1 ]; then
  .venv/bin/python -m pytest -m slow tests/test_bench_quick.py -q
fi
exec .venv/bin/python -m bench "${args[@]}"
