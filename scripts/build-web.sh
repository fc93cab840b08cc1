#!/usr/bin/env bash
# Builds the browser UI (clients/web/dist), installing its npm packages first when needed.
set -euo pipefail
cd "$(dirname "$0")/../clients/web"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --silent
fi
npm run build --silent
