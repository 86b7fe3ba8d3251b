"""Keep idle CPUs polling instead of halting, so a wake-up costs microseconds.

On a virtual machine a CPU with nothing to run halts, and the host has to wake
it when a packet or a thread needs it again: a few microseconds on a quiet
host, a millisecond or more on a busy one. On a 2-vCPU VM that, not the
server, was most of the 1-client p99 (bench/cpu_pinning.py, docs/server.md).
Bare metal offers ``idle=poll`` or C-state limits and KVM guests the haltpoll
cpuidle driver; where the host gives neither, this does the same from user
space: one process per CPU at ``SCHED_IDLE`` priority looping on
``sched_yield()``. The scheduler runs it only when nothing else wants that
CPU and the yield hands the CPU over at once when something does, but the CPU
never halts.

Processes, not threads: a spinning Python thread would hold the GIL the server
needs. The price is every idle CPU busy at 100% (billed, and hot), so
``peregrine serve`` only does this when asked (``--idle-poll``). Under a CPU
quota (a container's CPU limit) it is worse than useless: the pollers' time
counts against the quota, and the server gets throttled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

# Runs in each poller: die with the process that started it (PR_SET_PDEATHSIG),
# even if that one is killed with SIGKILL, then yield the CPU forever.
_POLL_LOOP = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)
os.sched_setaffinity(0, {int(sys.argv[2])})
os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
print(flush=True)
y = os.sched_yield
while True:
    y()
"""


def cpu_quota(root: Path = Path("/sys/fs/cgroup"),
              membership: Path = Path("/proc/self/cgroup")) -> float | None:
    """CPUs' worth of time this process's cgroup may use, or None without a quota."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "":  # cgroup v2: "max 100000" or "<quota> <period>"
            quota, _, period = _read(root / rel / "cpu.max").partition(" ")
        elif "cpu" in controllers.split(","):  # cgroup v1: quota -1 means none
            base = root / controllers
            quota, period = _read(base / rel / "cpu.cfs_quota_us"), _read(
                base / rel / "cpu.cfs_period_us")
        else:
            continue
        try:
            q, p = int(quota), int(period)
        except ValueError:
            continue
        if q > 0 and p > 0:
            return q / p
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def available() -> bool:
    """Linux only: needs SCHED_IDLE, CPU affinity and PR_SET_PDEATHSIG."""
    return sys.platform.startswith("linux") and hasattr(os, "SCHED_IDLE")


class IdlePoller:
    """One ``SCHED_IDLE`` poller process per CPU, started, paused and stopped together.

    ``pause``/``resume`` (SIGSTOP/SIGCONT) let a benchmark take turns with and
    without polling in one run; a server just starts it and stops it at exit.
    """

    def __init__(self, cpus: Iterable[int] | None = None) -> None:
        if not available():
            raise RuntimeError("idle polling needs Linux (SCHED_IDLE and CPU affinity)")
        self.cpus = sorted(os.sched_getaffinity(0) if cpus is None else set(cpus))
        if not self.cpus:
            raise ValueError("idle polling needs at least one CPU")
        self._procs: list[subprocess.Popen[bytes]] = []
        self.paused = False

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    @property
    def running(self) -> bool:
        return bool(self._procs)

    def start(self) -> IdlePoller:
        if self._procs:
            return self
        me = str(os.getpid())
        try:
            for cpu in self.cpus:
                proc = subprocess.Popen(
                    [sys.executable, "-S", "-c", _POLL_LOOP, me, str(cpu)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, close_fds=True)
                self._procs.append(proc)
            for proc in self._procs:  # each prints a line once it is SCHED_IDLE and pinned
                assert proc.stdout is not None
                if not proc.stdout.readline():
                    raise RuntimeError(f"idle poller for a CPU exited with {proc.wait()}")
        except BaseException:
            self.stop()
            raise
        self.paused = False
        return self

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        procs, self._procs = self._procs, []
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # SIGKILL works on a stopped process too
        for proc in procs:
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()

    def _signal(self, sig: signal.Signals) -> None:
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)

    def __enter__(self) -> IdlePoller:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
