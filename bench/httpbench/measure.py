"""Measuring paths through worker processes: 1-client latency and throughput (parent, .venv)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

# A sibling module; this runs with bench/ on sys.path.
import cpu_pinning
from httpbench.common import (
    CHROMA_CLIENTS,
    ENTRY,
    FLOOR,
    IDLE_POLL,
    INPROC_PAIRED,
    LABELS,
    PEERS_PY,
    PEREGRINE_CLIENTS,
    PINNED,
    ROOT,
    K,
    base_kind,
    pct,
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_json(cmd: list[str], stderr_path: Path, timeout: float = 3600) -> dict[str, Any]:
    with stderr_path.open("ab") as err:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, cwd=ROOT,
                              timeout=timeout, check=False)
    out = proc.stdout.decode().strip().splitlines()
    if proc.returncode != 0 or not out:
        tail = stderr_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({proc.returncode}): {tail}")
    result: dict[str, Any] = json.loads(out[-1])
    return result


def recall_at_10(found: list[list[int]], truth: np.ndarray) -> float:
    hits = sum(len(set(f[:K]) & set(t[:K].tolist())) for f, t in zip(found, truth, strict=True))
    return hits / (K * len(found))


class Measurements:
    """The run's paths, settings and results so far, and its measurements of client paths."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.workdir or tempfile.mkdtemp(prefix="http-bench-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.queries_path = self.work / "queries.npy"
        self.logs = self.work / "logs"
        self.logs.mkdir(exist_ok=True)
        self.results: dict[str, Any] = {}
        self.truth = np.empty((0, K), np.int32)
        self.base_path = ""
        self._inproc_ids: list[list[int]] = []
        self.server_pid: int | None = None
        self.floor_url = ""
        self.floor_pid: int | None = None
        self.paired_dir = Path()
        self.floor_wait_ms = 0.6
        self.poller: Any = None  # peregrine.runtime.idle_poll.IdlePoller, stopped between blocks

    # -- workers --------------------------------------------------------------------------
    def worker_cmd(self, kind: str, target: str, mode: str, **extra: Any) -> list[str]:
        chroma = any(k in CHROMA_CLIENTS for k in kind.split(","))
        python = str(PEERS_PY) if chroma else sys.executable
        cmd = [python, str(ENTRY), "_worker", "--client", kind,
               "--target", target, "--queries", str(self.queries_path), "--mode", mode]
        for key, value in extra.items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
        return cmd

    @staticmethod
    def pinned(kinds: Sequence[str]) -> tuple[str, ...]:
        return tuple(kind + PINNED for kind in kinds) if cpu_pinning.available() else ()

    def idle_polled(self, kinds: Sequence[str]) -> tuple[str, ...]:
        return tuple(kind + IDLE_POLL for kind in kinds) if self.poller is not None else ()

    def latency(self, kinds: Sequence[str], target: str, tag: str = "") -> dict[str, Any]:
        """1-client latency of ``kinds``, interleaved in one worker process."""
        log(f"latency: {', '.join(kinds)} (interleaved)")
        warmup = min(self.args.queries, 200 if self.args.quick else 1000)
        extra: dict[str, Any] = {"floor": self.floor_url} if FLOOR in kinds else {}
        if INPROC_PAIRED in kinds:
            extra["inproc"] = str(self.paired_dir)
        if any(kind.endswith(PINNED) for kind in kinds):
            extra.update(server_pid=self.server_pid, floor_pid=self.floor_pid)
        if any(kind.endswith(IDLE_POLL) for kind in kinds) and self.poller is not None:
            extra["poller_pids"] = ",".join(map(str, self.poller.pids))
        out = run_json(self.worker_cmd(",".join(kinds), target, "latency",
                                       passes=self.args.passes, warmup=warmup, **extra),
                       self.logs / f"latency-{kinds[0]}{tag}.err")
        for kind in kinds:
            res = out[kind]
            ids = res.pop("ids")
            if base_kind(kind) == FLOOR:  # fixed answers: nothing to score
                res["recall_at_10"] = None
                res["wait_ms"] = self.floor_wait_ms
                log(f"  {kind}: p50 {res['p50_ms']:.3f} ms  p99 {res['p99_ms']:.3f} ms")
                continue
            res["recall_at_10"] = recall_at_10(ids, self.truth)
            res["loadavg"] = loadavg()
            if kind in ("inproc", INPROC_PAIRED):
                self._inproc_ids = self._inproc_ids or ids
            elif base_kind(kind) in PEREGRINE_CLIENTS and self._inproc_ids:
                res["same_top10_as_inproc"] = sum(
                    a == b for a, b in zip(ids, self._inproc_ids, strict=True)) / len(ids)
            log(f"  {kind}: p50 {res['p50_ms']:.3f} ms  p99 {res['p99_ms']:.3f} ms  "
                f"recall {res['recall_at_10']:.4f}  server {res['server_timing_p50_ms']}")
        return out

    def throughput(self, kind: str, target: str, clients: int) -> dict[str, Any]:
        log(f"throughput: {kind} x {clients}")
        duration = self.args.duration
        warmup = 20
        # In-process: threads in one process; HTTP: one process per client.
        specs = [(clients, 0)] if kind == "inproc" else [(1, 97 * i) for i in range(clients)]
        procs: list[subprocess.Popen[str]] = []
        errs: list[IO[bytes]] = []
        load0 = loadavg()
        try:
            for i, (threads, offset) in enumerate(specs):
                err = (self.logs / f"tput-{kind}-{clients}-{i}.err").open("wb")
                errs.append(err)
                procs.append(subprocess.Popen(
                    self.worker_cmd(kind, target, "throughput", threads=threads, offset=offset,
                                    duration=duration, warmup=warmup),
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                    cwd=ROOT))
            for p in procs:
                assert p.stdout is not None
                if p.stdout.readline().strip() != "ready":
                    p.wait()
                    raise RuntimeError(f"{kind} worker failed to start: "
                                       f"{self._tail(self.logs, kind, clients)}")
            cpu0 = self.server_cpu_s()
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            outs = []
            for p in procs:
                out, _ = p.communicate(timeout=duration + 120)
                if p.returncode != 0:
                    raise RuntimeError(f"{kind} worker exited {p.returncode}: "
                                       f"{self._tail(self.logs, kind, clients)}")
                outs.append(json.loads(out.strip().splitlines()[-1]))
            cpu1 = self.server_cpu_s()
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            for f in errs:
                f.close()
        lat = np.concatenate([np.asarray(o["latencies_ms"], dtype=np.float64) for o in outs])
        count = sum(o["count"] for o in outs)
        res = {
            "clients": clients, "processes": len(procs), "duration_s": duration,
            "requests": count, "rps": count / duration,
            "errors": sum(o["errors"] for o in outs),
            "reconnects": sum(o.get("reconnects", 0) for o in outs),
            "first_error": next((o["first_error"] for o in outs if o["first_error"]), None),
            "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "per_client_rps": [round(o["count"] / duration, 1) for o in outs],
            "server_cpu_s": None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
            "loadavg_before": load0, "loadavg_after": loadavg(),
        }
        if res["server_cpu_s"] is not None and count:
            res["server_cpu_ms_per_request"] = res["server_cpu_s"] * 1e3 / count
            res["server_cores_busy"] = res["server_cpu_s"] / duration
        log(f"  {res['rps']:.0f} req/s  p50 {res['p50_ms']:.2f} ms  p99 {res['p99_ms']:.2f} ms"
            f"  errors {res['errors']}  server cpu/request "
            f"{res.get('server_cpu_ms_per_request', 0):.3f} ms")
        return res

    def server_cpu_s(self) -> float | None:
        """CPU seconds (user + system, with children) used so far by the running server."""
        if self.server_pid is None:
            return None
        try:
            import psutil

            proc = psutil.Process(self.server_pid)
            total = sum(proc.cpu_times()[:4])
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += sum(child.cpu_times()[:2])
            return float(total)
        except Exception:
            return None

    @staticmethod
    def _tail(logs: Path, kind: str, clients: int) -> str:
        paths = sorted(logs.glob(f"tput-{kind}-{clients}-*"))
        texts = [p.read_text(errors="replace") for p in paths]
        return next((t[-1500:] for t in texts if t.strip()), "")

    def measure(self, kinds: Sequence[str], target: str) -> dict[str, dict[str, Any]]:
        """Latency (all ``kinds`` interleaved), then throughput of each kind in turn."""
        out: dict[str, dict[str, Any]] = {kind: {"label": LABELS[kind]} for kind in kinds}
        try:
            for kind, lat in self.latency(kinds, target).items():
                out[kind]["latency"] = lat
        except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
            log(f"  FAILED: {exc}")
            for kind in kinds:
                out[kind]["error"] = str(exc)[-2000:]
            return out
        for kind in kinds:
            if kind in (FLOOR, INPROC_PAIRED) or kind != base_kind(kind):  # latency only
                continue
            try:
                out[kind]["throughput"] = {str(c): self.throughput(kind, target, c)
                                           for c in self.args.clients}
            except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
                log(f"  FAILED: {exc}")
                out[kind]["error"] = str(exc)[-2000:]
        return out
