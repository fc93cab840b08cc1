#!/usr/bin/env bash
# Runs the benchmarks (docs/performance.md): every figure beside a baseline measured in the same run,
# on a fresh database of one PostgreSQL (embedded in a temporary directory unless --database-url).
#   scripts/bench.sh                full run (about 7 minutes on 2 cores)
#   scripts/bench.sh --quick        fewer iterations and smaller scenarios, the same table (under a minute)
# The harness itself is tested at its smallest size (--smoke) by tests/test_bench_quick.py in the suite.
# Other arguments go to `python -m bench` (--only NAME ..., --json FILE, --markdown FILE, --database-url URL).
set -euo pipefail
cd "$(dirname "$0")/.."
LACE_SKIP_NPM=${LACE_SKIP_NPM:-1} scripts/bootstrap.sh
exec .venv/bin/python -m bench "$@"
