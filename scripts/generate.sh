#!/usr/bin/env bash
# Regenerates every checked-in stub from proto/. Run after editing a .proto file:
#   scripts/generate.sh
# Python: grpcio-tools (messages, .pyi stubs, gRPC stubs) + mypy-protobuf (typed gRPC stubs).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
out=clients/python
rm -rf "$out/lace"
mkdir -p "$out/lace/v1"
"$PY" -m grpc_tools.protoc -Iproto \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  --plugin=protoc-gen-mypy_grpc="$(dirname "$PY")/protoc-gen-mypy_grpc" --mypy_grpc_out="$out" \
  proto/lace/v1/*.proto
# Namespace-free regular packages so that `import lace.v1` works from a wheel too.
printf '"""Generated from proto/ by scripts/generate.sh; do not edit."""\n' > "$out/lace/__init__.py"
printf '"""Generated from proto/lace/v1 by scripts/generate.sh; do not edit."""\n' > "$out/lace/v1/__init__.py"
touch "$out/lace/py.typed"
if [ -f clients/typescript/buf.gen.yaml ] && [ -x node_modules/.bin/buf ]; then
  # TypeScript (clients/typescript/src/gen and clients/web/src/gen): protoc-gen-es from its node_modules.
  [ -x clients/typescript/node_modules/.bin/protoc-gen-es ] || (cd clients/typescript && npm ci --no-audit --no-fund --silent)
  (cd clients/typescript && ../../node_modules/.bin/buf generate ../../proto)
fi
