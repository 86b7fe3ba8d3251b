#!/usr/bin/env bash
# Create .venv at the repo root with Peregrine and its extras.
# torch is pinned to the CPU build first so the `embed` extra does not pull a
# multi-GB CUDA wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
# The state face's shared tier, and its tests, need a real Redis server (Debian's).
if ! command -v redis-server >/dev/null 2>&1; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get install -y -q redis-server >/dev/null 2>&1 \
        || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q redis-server >/dev/null; }
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
# llama-cpp-python (the llm extra) compiles llama.cpp: a few minutes on 2 cores.
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
.venv/bin/python -m pip install -q -e ".[embed,otel,llm,dev]"
