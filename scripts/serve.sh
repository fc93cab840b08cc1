#!/usr/bin/env bash
# The README's first command: install what is needed, start LACE on an embedded PostgreSQL,
# write a demo artifact through the API (saved as lace-demo.md), and keep serving until Ctrl-C.
#   scripts/serve.sh                # demo + server on 127.0.0.1:50051
#   scripts/serve.sh --web          # also the browser UI on http://127.0.0.1:8080/
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
args=(--demo)
for a in "$@"; do
  if [ "$a" = "--web" ]; then scripts/build-web.sh; fi
  args+=("$a")
done
export LACE_LOG_FORMAT=${LACE_LOG_FORMAT:-text}
export LACE_LOG_LEVEL=${LACE_LOG_LEVEL:-WARNING}
exec .venv/bin/lace serve "${args[@]}"
