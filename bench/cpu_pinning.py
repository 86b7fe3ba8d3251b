"""Put a server's threads on one CPU and the client on another, for one block of queries.

Why the HTTP benchmark has pinned rows: on a small virtual machine a client that
blocks on its socket for a millisecond lets its virtual CPU halt, and so does the
server between requests. Each request then needs the host to wake a halted vCPU,
sometimes twice, and the host takes from microseconds to milliseconds to do it:
that, not the server, is most of the 1-client p99 here. With the server on one
vCPU and the client on the other (as one gives a system under test and its load
generator their own cores) the scheduler stops moving both between vCPUs; the
pinned rows show what is left. Linux only; elsewhere ``available()`` is False.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import TracebackType


def available() -> bool:
    return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a server may run its engine in a child process)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        for task in _tasks(current):
            with contextlib.suppress(OSError):
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
                todo.extend(int(c) for c in children)
    return out


def _tasks(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def _set_threads(pids: list[int], cpus: set[int]) -> None:
    for pid in pids:
        for task in _tasks(pid):
            with contextlib.suppress(OSError):  # a thread may exit meanwhile
                os.sched_setaffinity(task, cpus)


class CpuPinning:
    """Context manager: server threads on the last CPU, this process on the first."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.all_cpus = set(os.sched_getaffinity(0))
        ordered = sorted(self.all_cpus)
        self.server_cpus, self.client_cpus = {ordered[-1]}, {ordered[0]}

    def __enter__(self) -> CpuPinning:
        _set_threads(process_tree(self.server_pid), self.server_cpus)
        _set_threads([os.getpid()], self.client_cpus)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        _set_threads(process_tree(self.server_pid), self.all_cpus)
        _set_threads([os.getpid()], self.all_cpus)
