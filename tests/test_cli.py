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


def test_serve_demo_loads_real_text_and_prints_a_working_query(tmp_path: Path) -> None:
    import signal
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out.txt"
    with out.open("w") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "peregrine", "serve", "--data", str(tmp_path / "db"),
             "--http-port", str(port), "--demo", "--demo-n", "200"],
            stdout=stdout, stderr=subprocess.DEVNULL, text=True)
        try:
            deadline = time.monotonic() + 300
            while "Ctrl-C stops" not in out.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, out.read_text()
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(60)
    text = out.read_text()
    assert rc == 0
    assert f"http://127.0.0.1:{port}" in text
    assert "curl -s -X POST" in text and "/collections/docs/points/query" in text
    answers = [line for line in text.splitlines() if line.startswith("  0.") and "#" in line]
    assert len(answers) == 3, text
