#!/usr/bin/env bash
# Runs the benchmarks (docs/performance.md): every figure beside a baseline measured in the same run,
# on a fresh database of one PostgreSQL (embedded in a temporary directory unless --database-url).
#   scripts/bench.sh                full run (about 7 minutes on 2 cores, plus ~15 for the peers)
#   scripts/bench.sh --quick        fewer iterations and smaller scenarios, the same table (under a minute)
#   scripts/bench.sh --peers        only the peers (LACE beside LangGraph and DBOS, bench/peers/; about 15 minutes)
# The harness itself is tested at its smallest size (--smoke) by tests/test_bench_quick.py in the suite.
# Other arguments go to `python -m bench` (--only NAME ..., --json FILE, --markdown FILE, --database-url URL).
set -euo pipefail
cd "$(dirname "$0")/.."
# The peers' packages (langgraph, langgraph-checkpoint-postgres, dbos, matplotlib) are the `peers` extra:
# installed here, not by the test suite's bootstrap.
LACE_EXTRAS=dev,peers LACE_SKIP_NPM=${LACE_SKIP_NPM:-1} scripts/bootstrap.sh
args=()
for a in "$@"; do
  if [ "$a" = "--peers" ]; then args+=(--only peers); else args+=("$a"); fi
done
exec .venv/bin/python -m bench "${args[@]}"
