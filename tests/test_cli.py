"""The README's main job end to end: `peregrine demo` on a small corpus."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sentence_transformers")


def test_demo_runs_and_reports_latency(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "peregrine", "demo", "--data", str(tmp_path / "db"), "--n", "300"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "upserted 300 points" in out
    assert "search latency" in out and "p50" in out
    assert "read-your-writes: top hit" in out


def test_cli_reports_engine_errors_cleanly(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "peregrine", "info", "--data", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
