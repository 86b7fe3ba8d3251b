"""A real `peregrine serve` process for tests: free port, temp data dir, clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

# `python -m peregrine ...`, told by the kernel (PR_SET_PDEATHSIG, which survives the exec)
# to get a SIGTERM when the test process dies: a pytest killed mid-run takes its servers
# along instead of leaving them holding ports and temp directories.
_DYING_WITH_PARENT = [
    sys.executable, "-c",
    "import ctypes, os, signal, sys\n"
    "if sys.platform.startswith('linux'):\n"
    "    ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'peregrine', *sys.argv[1:]])",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, data: Path, *args: str, env: Mapping[str, str] | None = None,
                 scheme: str = "http") -> None:
        self.data = data
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.log_path = data.parent / f"server-{self.port}.log"
        self.out_path = data.parent / f"server-{self.port}.out"
        self._log = self.log_path.open("wb")
        self._out = self.out_path.open("wb")
        full_env = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(
            [*_DYING_WITH_PARENT, "serve", "--data", str(data), "--http-port", str(self.port),
             "--stream-nats-port", "0", *args],
            stdout=self._out, stderr=self._log, env=full_env,
        )
        self._wait_ready(scheme)

    def _wait_ready(self, scheme: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                r = httpx.get(self.url + "/readyz", verify=False, timeout=1)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("server did not become ready:\n" + self.log())

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stdout(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.out_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self._out.close()
        return int(self.proc.returncode)

    def server_errors(self) -> list[str]:
        """Log lines of 5xx answers or tracebacks: a test that sees any has found a bug."""
        return [line for line in self.log().splitlines()
                if '"status":5' in line or '"level":"error"' in line or "Traceback" in line]


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert isinstance(body["time"], float)
    return body["result"]


def error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    message = body["status"]["error"]
    assert isinstance(message, str) and message
    return message
