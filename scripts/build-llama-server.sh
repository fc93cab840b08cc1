#!/usr/bin/env bash
# Builds llama.cpp's llama-server from the sources vendored in the llama-cpp-python sdist, into a
# cache outside the repository (LACE_CACHE_DIR, else ~/.cache/lace), and prints the binary's path.
# Rebuilt only when the pinned version changes or the binary is missing (about 5 minutes on 2 cores).
# `lace serve --llm local` does the same on first use; scripts/test.sh runs this first.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" -m lace_engine.llm.local build
