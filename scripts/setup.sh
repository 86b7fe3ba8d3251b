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
# Sparse search's loops (numba) compiled once, into numba's on-disk cache.
.venv/bin/python -c "from peregrine.vector.segment import sparse_kernel; sparse_kernel.warm()"
# The same llama.cpp without llamafile and repacked kernels, whose results depend
# on the batch: llm.batch_invariant loads it (docs/inference.md). Built once.
INV=.venv/llama-invariant
VER=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))")
if [ ! -f "$INV/libllama.so" ] || [ "$(cat "$INV/VERSION" 2>/dev/null)" != "$VER" ]; then
    TMP=$(mktemp -d)
    CMAKE_ARGS="-DGGML_LLAMAFILE=OFF -DGGML_CPU_REPACK=OFF" .venv/bin/python -m pip wheel -q \
        --no-deps --no-cache-dir --no-binary llama-cpp-python "llama-cpp-python==$VER" -w "$TMP"
    mkdir -p "$INV.tmp"
    .venv/bin/python - "$TMP" "$INV.tmp" <<'PY'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("llama_cpp_python-*.whl"))
out = pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("llama_cpp/lib/") and not name.endswith("/"):
            (out / pathlib.Path(name).name).write_bytes(z.read(name))
PY
    echo "$VER" > "$INV.tmp/VERSION"  # the binding it was built for
    rm -rf "$INV" "$TMP" && mv "$INV.tmp" "$INV"
fi
