"""What a run records about itself: the commit, the machine and the versions."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from httpbench.common import PEERS_PY, ROOT


def git_info() -> dict[str, Any]:
    """The commit measured and the files of src/ that differed from it at the start."""
    def git(*cmd: str) -> str:
        proc = subprocess.run(["git", *cmd], capture_output=True, text=True, cwd=ROOT,
                              check=False)
        return proc.stdout if proc.returncode == 0 else ""

    status = git("status", "--porcelain", "--", "src").splitlines()
    return {"commit": git("rev-parse", "HEAD").strip(),
            "src_modified": [line[3:] for line in status if line.strip()]}


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        mem_gb = round(int(first.split()[1]) / 2**20, 1)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb,
            "platform": platform.platform(), "python": platform.python_version()}


def versions() -> dict[str, str]:
    from importlib import metadata

    out: dict[str, str] = {}
    for name in ("peregrine", "numpy", "faiss-cpu", "msgpack", "orjson", "httpx",
                 "qdrant-client", "uvicorn", "httptools", "uvloop"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    if PEERS_PY.exists():
        proc = subprocess.run(
            [str(PEERS_PY), "-c", "from importlib import metadata as m; import platform; "
             "print(m.version('chromadb'), platform.python_version())"],
            capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            chroma, py = proc.stdout.split()
            out["chromadb"] = chroma
            out["peers_python"] = py
    return out
