"""One run (parent, .venv): the data, the in-process build, the servers and their phases."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from httpbench.clients import _StdlibKeepAlive
from httpbench.common import (
    CHROMA_CLIENTS,
    COLLECTION,
    EF,
    EF_CONSTRUCTION,
    ENTRY,
    FLOOR,
    GREEN_WAIT_S,
    HTTP_INGEST_BATCH,
    IDLE_POLL_CHROMA,
    IDLE_POLL_PEREGRINE,
    INPROC_PAIRED,
    PEERS_PY,
    PEREGRINE_CLIENTS,
    PINNED_CHROMA,
    PINNED_PEREGRINE,
    ROOT,
    K,
    M,
    pct,
)
from httpbench.info import git_info, machine_info, versions
from httpbench.measure import Measurements, free_port, loadavg, log, run_json
from httpbench.summary import summarize


class Bench(Measurements):
    """One run: paths, settings and the results collected so far."""

    # -- data -----------------------------------------------------------------------------
    def prepare_data(self) -> dict[str, Any]:
        sys.path.insert(0, str(ROOT / "bench"))
        from dataset import exact_topk, load_dataset

        n = self.args.n
        try:
            ds = load_dataset(n, 1000, build=False)
            truth = np.asarray(ds.ground_truth[:, :K])
            source = f"cache {ds.path.name}"
        except FileNotFoundError:
            # Never re-embed: slice the 200k cache and compute exact ground truth.
            ds = load_dataset(200_000, 1000, build=False)
            if n > ds.base.shape[0]:
                raise SystemExit(f"--n {n} is larger than the 200k cache") from None
            t0 = time.perf_counter()
            truth, _ = exact_topk(np.asarray(ds.base[:n]), np.asarray(ds.queries), K)
            source = (f"first {n} rows of cache {ds.path.name}, exact ground truth recomputed "
                      f"({time.perf_counter() - t0:.1f} s)")
        self.base_path = str(ds.path / "base.npy")
        queries = np.ascontiguousarray(ds.queries, dtype=np.float32)[: self.args.queries]
        np.save(self.queries_path, queries)
        self.truth = np.asarray(truth[: len(queries), :K])
        return {"n": n, "dim": int(ds.base.shape[1]), "queries": len(queries),
                "source": source, "model": ds.meta.get("model")}


    def start_idle_poller(self) -> None:
        """The pollers of `peregrine serve --runtime-idle-poll`, stopped until a row's block."""
        from peregrine.runtime import idle_poll

        if idle_poll.available() and len(os.sched_getaffinity(0)) >= 2:
            self.poller = idle_poll.IdlePoller().start()
            self.poller.pause()
            log(f"idle pollers on CPUs {self.poller.cpus} (stopped): pids {self.poller.pids}")

    # -- servers --------------------------------------------------------------------------
    def start_server(self, cmd: list[str], ready_url: str, log_path: Path,
                     env: dict[str, str]) -> subprocess.Popen[bytes]:
        log("$ " + " ".join(cmd))
        with log_path.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode}: "
                                   f"{log_path.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as r:
                    if r.status == 200:
                        self.server_pid = proc.pid
                        return proc
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        stop_server(proc)
        raise RuntimeError(f"server not ready after 180 s: {ready_url}")

    def start_floor_server(self) -> subprocess.Popen[bytes]:
        port = free_port()
        self.floor_url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, str(ENTRY), "_floor_server", "--target",
               str(port), "--work-us", str(round(self.floor_wait_ms * 1000))]
        return self.start_server(cmd, f"{self.floor_url}/", self.logs / "floor-server.log",
                                 dict(os.environ))

    def peregrine_phase(self, data_dir: Path) -> dict[str, Any]:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = serve_command(data_dir, port)
        env = dict(os.environ, PEREGRINE_HTTP_ACCESS_LOG="false")
        server_log = self.logs / "peregrine-server.log"
        floor = self.start_floor_server()
        self.floor_pid = floor.pid
        try:
            proc = self.start_server(cmd, f"{url}/readyz", server_log, env)
        except BaseException:
            stop_server(floor)
            raise
        phase: dict[str, Any] = {"command": " ".join(cmd[1:]).replace(str(data_dir), "DIR")
                                 .replace(str(port), "PORT"),
                                 "env": {"PEREGRINE_HTTP_ACCESS_LOG": "false"}}
        try:
            info = http_json("GET", f"{url}/collections/{COLLECTION}")["result"]
            phase["collection_status"] = info.get("status")
            phase["points_count"] = info.get("points_count")
            if info.get("points_count") != self.args.n or info.get("status") != "green":
                log(f"  WARNING: collection info {info.get('status')} "
                    f"{info.get('points_count')} points")
            phase.update(self.measure((*PEREGRINE_CLIENTS, FLOOR, INPROC_PAIRED,
                                       *self.pinned(PINNED_PEREGRINE),
                                       *self.idle_polled(IDLE_POLL_PEREGRINE)), url))
            stop_server(floor)
            if self.args.http_ingest:
                phase["http_ingest"] = self.http_ingest(url)
        finally:
            if floor.poll() is None:
                stop_server(floor)
            self.server_pid = None
            phase["exit_code"], phase["stop_s"] = stop_server(proc)
            phase["server_log_tail"] = server_log.read_text(errors="replace")[-3000:]
        return phase

    def http_ingest(self, url: str) -> dict[str, Any]:
        """Upsert the same vectors through HTTP (msgpack binary batches) into a new collection."""
        import msgpack

        log("http ingest")
        name = "ingest"
        base = np.load(self.base_path, mmap_mode="r")[: self.args.n]
        http_json("PUT", f"{url}/collections/{name}", {
            "vectors": {"size": int(base.shape[1]), "distance": "Cosine"},
            "hnsw_config": {"m": M, "ef_construct": EF_CONSTRUCTION}})
        client = _StdlibKeepAlive(url)
        headers = {"Content-Type": "application/msgpack", "Accept": "application/msgpack"}
        path = f"/collections/{name}/points?wait=true"
        times: list[float] = []
        t0 = time.perf_counter()
        try:
            for start in range(0, self.args.n, HTTP_INGEST_BATCH):
                stop = min(self.args.n, start + HTTP_INGEST_BATCH)
                body = msgpack.packb({"batch": {
                    "ids": list(range(start, stop)),
                    "vectors": np.ascontiguousarray(base[start:stop], "<f4").tobytes()}})
                t1 = time.perf_counter()
                client.conn.request("PUT", path, body=body, headers=headers)
                resp = client.conn.getresponse()
                data = resp.read()
                times.append((time.perf_counter() - t1) * 1e3)
                if resp.status != 200:
                    raise RuntimeError(f"PUT {path} (msgpack, {len(body)} B, ids {start}..{stop}) "
                                       f"-> {resp.status}: {data[:300]!r}")
            upsert_s = time.perf_counter() - t0
            green_s = None
            info: dict[str, Any] = {}
            while time.perf_counter() - t0 < upsert_s + GREEN_WAIT_S:
                info = http_json("GET", f"{url}/collections/{name}")["result"]
                if info.get("status") == "green":
                    green_s = time.perf_counter() - t0
                    break
                time.sleep(0.5)
            return {"n": self.args.n, "batch": HTTP_INGEST_BATCH, "upsert_s": upsert_s,
                    "vectors_per_s": self.args.n / upsert_s, "batch_p50_ms": pct(times, 50),
                    "batch_max_ms": max(times), "green_after_s": green_s,
                    "points_count": info.get("points_count")}
        except (RuntimeError, OSError) as exc:
            log(f"  FAILED: {exc}")
            return {"error": str(exc)}
        finally:
            client.close()
            with contextlib.suppress(RuntimeError, OSError):
                http_json("DELETE", f"{url}/collections/{name}")

    def chroma_phase(self, data_dir: Path) -> dict[str, Any]:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        chroma = PEERS_PY.parent / "chroma"
        cmd = [str(chroma), "run", "--path", str(data_dir), "--host", "127.0.0.1",
               "--port", str(port)]
        # Chroma logs every request at INFO; warn level, like Peregrine's access log off.
        env = dict(os.environ, RUST_LOG="warn")
        server_log = self.logs / "chroma-server.log"
        proc = self.start_server(cmd, f"{url}/api/v2/heartbeat", server_log, env)
        phase: dict[str, Any] = {"command": "chroma run --path DIR --host 127.0.0.1 --port PORT",
                                 "env": {"RUST_LOG": "warn"}}
        try:
            log("chroma: loading through its client")
            phase["build"] = run_json(
                [str(PEERS_PY), str(ENTRY), "_chroma_load", "--target", url,
                 "--base", self.base_path, "--n", str(self.args.n)], self.logs / "chroma-load.err")
            log(f"  chroma loaded in {phase['build']['build_s']:.1f} s")
            phase.update(self.measure((*CHROMA_CLIENTS, *self.pinned(PINNED_CHROMA),
                                       *self.idle_polled(IDLE_POLL_CHROMA)), url))
        except RuntimeError as exc:
            log(f"  FAILED: {exc}")
            phase["error"] = str(exc)[-2000:]
        finally:
            self.server_pid = None
            phase["exit_code"], phase["stop_s"] = stop_server(proc)
            phase["server_log_tail"] = server_log.read_text(errors="replace")[-3000:]
        return phase

    # -- the run --------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        args = self.args
        res: dict[str, Any] = {
            "command": "python bench/http_bench.py " + " ".join(sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "machine": machine_info(),
            "versions": versions(),
            "git": git_info(),
            "settings": {"n": args.n, "k": K, "ef": EF, "m": M, "ef_construction": EF_CONSTRUCTION,
                         "passes": args.passes, "duration_s": args.duration,
                         "clients": list(args.clients), "quick": args.quick,
                         "peregrine_cache_entries": 0},
            "loadavg_start": loadavg(),
        }
        res["data"] = self.prepare_data()
        log(f"data: {res['data']}")
        pg_dir = self.work / "peregrine"
        shutil.rmtree(pg_dir, ignore_errors=True)
        log(f"peregrine: building {args.n} vectors in-process")
        res["peregrine_build"] = run_json(
            [sys.executable, str(ENTRY), "_build", "--dir", str(pg_dir),
             "--base", self.base_path, "--n", str(args.n)], self.logs / "build.err")
        log(f"  built in {res['peregrine_build']['build_s']:.1f} s")
        res["inproc"] = self.measure(["inproc"], str(pg_dir))["inproc"]
        self.paired_dir = self.work / "peregrine-copy"
        shutil.rmtree(self.paired_dir, ignore_errors=True)
        shutil.copytree(pg_dir, self.paired_dir)
        self.floor_wait_ms = float(res["inproc"].get("latency", {}).get("p50_ms", 0.6))
        self.start_idle_poller()
        try:
            res["peregrine_server"] = self.peregrine_phase(pg_dir)
            # The in-process latency once more after the server phase: this machine drifts,
            # and the HTTP overhead is judged against both in-process runs' samples together.
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                again = self.latency(["inproc"], str(pg_dir), tag="-after")["inproc"]
                res["inproc"]["latency_after_server"] = again
            if not args.skip_chroma:
                ch_dir = self.work / "chroma"
                shutil.rmtree(ch_dir, ignore_errors=True)
                res["chroma_server"] = self.chroma_phase(ch_dir)
        finally:
            if self.poller is not None:
                self.poller.stop()
        res["loadavg_end"] = loadavg()
        res["summary"] = summarize(res)
        if not args.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            res["workdir"] = str(self.work)
        return res


def http_json(method: str, url: str, body: Any = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            out: dict[str, Any] = json.loads(r.read())
            return out
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{method} {url} -> {exc.code}: {exc.read()[:300]!r}") from None


def stop_server(proc: subprocess.Popen[bytes]) -> tuple[int | None, float]:
    """SIGTERM, wait up to 60 s, then SIGKILL; return (exit code, seconds to stop)."""
    t0 = time.perf_counter()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            log("  server ignored SIGTERM for 60 s: killing it")
            proc.kill()
            proc.wait()
    return proc.returncode, time.perf_counter() - t0


def peregrine_cli() -> str:
    cli = Path(sys.executable).parent / "peregrine"
    return str(cli) if cli.exists() else shutil.which("peregrine") or "peregrine"


def serve_command(data_dir: Path, port: int) -> list[str]:
    """The `peregrine serve` command line of the server phase, the one place it is built.

    The result cache is off, so every request searches, and only warnings are logged
    (the access log is off through ``PEREGRINE_HTTP_ACCESS_LOG``). The idle pollers are not
    asked for here: the run starts its own, to resume them for some blocks only.
    """
    return [peregrine_cli(), "serve", "--data", str(data_dir), "--http-port", str(port),
            "--vector-cache-entries", "0", "--log-level", "warning"]
