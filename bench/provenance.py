"""Where a benchmark result came from: the command, the machine, the time and the
commit, recorded the same way in every ``bench/results/*.json``."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def provenance(script: str) -> dict[str, Any]:
    """``command``, ``machine``, ``date`` and ``git`` of this run of ``script``."""
    return {"command": f"python bench/{script} " + " ".join(sys.argv[1:]),
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python "
                       f"{platform.python_version()}",
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                  capture_output=True, text=True, cwd=ROOT).stdout.strip()}
