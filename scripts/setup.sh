#!/usr/bin/env bash
# Create .venv at the repo root with Peregrine and its extras.
# torch is pinned to the CPU build first so the `embed` extra does not pull a
# multi-GB CUDA wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[embed,otel,dev]"
