#!/usr/bin/env bash
# The README's second command: installs what it needs, then runs every check and the whole suite
# against a real embedded PostgreSQL (or LACE_TEST_DATABASE_URL), real gRPC, real NATS and a real
# OpenAI-compatible HTTP server. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/build-llama-server.sh >/dev/null  # the real-model tests' llama-server, once per machine
scripts/check-generated.sh
scripts/lint.sh
if [ -x scripts/test-clients.sh ] && [ "${LACE_SKIP_CLIENTS:-}" != "1" ]; then
  scripts/test-clients.sh
fi
exec .venv/bin/python -m pytest "$@"
