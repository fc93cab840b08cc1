#!/usr/bin/env bash
# Fails when the checked-in generated code differs from what proto/ generates now.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/generate.sh >/dev/null 2>&1
if ! git diff --quiet -- clients/python/lace clients/typescript/src/gen clients/web/src/gen 2>/dev/null \
   || [ -n "$(git status --porcelain -- clients/python/lace clients/typescript/src/gen clients/web/src/gen)" ]; then
  echo "generated code is stale: run scripts/generate.sh and commit the result" >&2
  git status --short -- clients/python/lace clients/typescript/src/gen clients/web/src/gen >&2
  exit 1
fi
echo "generated code is up to date"
