#!/usr/bin/env bash
# Creates .venv and installs LACE with its test tools, and the pinned npm tools (buf).
# Idempotent and quick when nothing changed. Used by scripts/serve.sh and scripts/test.sh.
# LACE_EXTRAS names the extras to install (default: dev; scripts/bench.sh adds peers).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.lace-installed
extras=${LACE_EXTRAS:-dev}
want=$( (cat pyproject.toml clients/python/pyproject.toml 2>/dev/null; echo "$extras") | sha256sum | cut -c1-16 || true)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[$extras]"
  echo "$want" > "$stamp"
fi
if [ "${LACE_SKIP_NPM:-}" != "1" ] && command -v npm >/dev/null; then
  lock=node_modules/.lace-installed
  want_npm=$(sha256sum package.json package-lock.json 2>/dev/null | sha256sum | cut -c1-16)
  if [ ! -f "$lock" ] || [ "$(cat "$lock")" != "$want_npm" ]; then
    npm ci --silent --no-audit --no-fund
    echo "$want_npm" > "$lock"
  fi
fi
