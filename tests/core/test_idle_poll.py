"""Idle pollers: one SCHED_IDLE process per CPU, paused, resumed, and never left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from peregrine.runtime import idle_poll
from peregrine.runtime.idle_poll import IdlePoller

pytestmark = pytest.mark.skipif(not idle_poll.available(), reason="Linux only")


def state(pid: int) -> str:
    """The process state letter from /proc (R running, S sleeping, T stopped, ...)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def alive(pid: int) -> bool:
    try:
        return state(pid) != "Z"
    except FileNotFoundError:
        return False


def wait_for(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_one_idle_priority_poller_per_cpu_on_its_own_cpu() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    with IdlePoller() as poller:
        assert poller.cpus == cpus and len(poller.pids) == len(cpus)
        for cpu, pid in zip(cpus, poller.pids, strict=True):
            assert os.sched_getscheduler(pid) == os.SCHED_IDLE
            assert os.sched_getaffinity(pid) == {cpu}
            assert state(pid) == "R"  # polling: always runnable, never asleep
        pids = poller.pids
    assert not poller.running
    assert not any(alive(pid) for pid in pids)


def test_pause_stops_the_pollers_and_resume_restarts_them() -> None:
    with IdlePoller(cpus=[min(os.sched_getaffinity(0))]) as poller:
        pid = poller.pids[0]
        poller.pause()
        assert wait_for(lambda: state(pid) == "T") and poller.paused
        poller.resume()
        assert wait_for(lambda: state(pid) == "R") and not poller.paused
        poller.pause()
        assert wait_for(lambda: state(pid) == "T")
    assert not alive(pid)  # a stopped poller is killed too


def test_pollers_die_with_their_parent_even_on_sigkill() -> None:
    script = textwrap.dedent("""
        import sys, time
        from peregrine.runtime.idle_poll import IdlePoller
        poller = IdlePoller().start()
        print(*poller.pids, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert pids and all(alive(pid) for pid in pids)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    assert wait_for(lambda: not any(alive(pid) for pid in pids))


def test_no_cpus_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one CPU"):
        IdlePoller(cpus=[])



@pytest.mark.parametrize(("membership", "files", "quota"), [
    ("0::/pod/app\n", {"pod/app/cpu.max": "150000 100000\n"}, 1.5),
    ("0::/pod/app\n", {"pod/app/cpu.max": "max 100000\n"}, None),
    ("3:cpu,cpuacct:/job\n1:memory:/job\n",
     {"cpu,cpuacct/job/cpu.cfs_quota_us": "50000\n",
      "cpu,cpuacct/job/cpu.cfs_period_us": "100000\n"}, 0.5),
    ("3:cpu,cpuacct:/job\n", {"cpu,cpuacct/job/cpu.cfs_quota_us": "-1\n",
                              "cpu,cpuacct/job/cpu.cfs_period_us": "100000\n"}, None),
    ("0::/gone\n", {}, None),
])
def test_cpu_quota_reads_cgroup_v1_and_v2(tmp_path: Path, membership: str,
                                          files: dict[str, str], quota: float | None) -> None:
    """A server polling under a container's CPU limit would throttle itself: it warns."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "cgroup").write_text(membership)
    assert idle_poll.cpu_quota(tmp_path, tmp_path / "cgroup") == quota
