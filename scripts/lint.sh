#!/usr/bin/env bash
# Static checks: buf lint (+ breaking against the previous commit), ruff, mypy --strict.
set -euo pipefail
cd "$(dirname "$0")/.."
node_modules/.bin/buf lint
if git rev-parse -q --verify HEAD~1 >/dev/null && git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then
  node_modules/.bin/buf breaking --against '.git#ref=HEAD~1'
fi
.venv/bin/ruff check .
.venv/bin/mypy
echo "lint: buf, ruff and mypy clean"
