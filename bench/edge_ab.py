"""The HTTP edge's per-request cost, side by side with another revision's server.

Two servers run at once on the same data: this checkout's and a baseline
(another revision's ``src`` directory, e.g. a ``git worktree``). One client
process alternates blocks of identical requests between them, so both see
the same machine noise, and reports latency percentiles per server and path
and their ratio. The collection is small (exact search over a few thousand
rows, tens of microseconds of engine time), so what is measured is mostly
the server's HTTP path: parsing, routing, validation, the engine hand-off,
encoding.

    git worktree add /tmp/base <rev>
    python bench/edge_ab.py --baseline-src /tmp/base/src

Writes bench/results/edge_ab.json and prints a table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "edge_ab.json"
COLLECTION = "ab"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(src: Path, data: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A server from ``src``; its flags are found out from its own --help."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEREGRINE_")}
    env["PYTHONPATH"] = str(src)
    help_text = subprocess.run([sys.executable, "-m", "peregrine", "serve", "--help"], env=env,
                               capture_output=True, text=True, check=True).stdout
    new = "--http-port" in help_text
    flags = (["--http-port", str(port), "--vector-cache-entries", "0"] if new
             else ["--port", str(port), "--cache-entries", "0"])
    # The access log off, under the revision's name for it.
    env["PEREGRINE_HTTP_ACCESS_LOG" if new else "PEREGRINE_ACCESS_LOG"] = "false"
    proc = subprocess.Popen([sys.executable, "-m", "peregrine", "serve", "--data", str(data),
                             "--log-level", "warning", *flags], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                conn.close()
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server from {src} did not start")


class Client:
    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port)

    def call(self, method: str, path: str, body: bytes, content_type: str,
             accept: str = "application/json") -> bytes:
        self.conn.request(method, path, body=body, headers={
            "content-type": content_type, "accept": accept})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:200]!r}")
        return data


def load(client: Client, n: int, dim: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    client.call("PUT", f"/collections/{COLLECTION}", orjson.dumps(
        {"vectors": {"size": dim, "distance": "Cosine"}}), "application/json")
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    for start in range(0, n, 1000):
        stop = min(n, start + 1000)
        client.call("PUT", f"/collections/{COLLECTION}/points?wait=true", orjson.dumps({
            "batch": {"ids": list(range(start, stop)), "vectors": vectors[start:stop],
                      "payloads": [{"i": i} for i in range(start, stop)]}},
            option=orjson.OPT_SERIALIZE_NUMPY), "application/json")
    return rng.standard_normal((256, dim)).astype(np.float32)


def requests(queries: np.ndarray) -> dict[str, list[tuple[str, str, bytes, str, str]]]:
    path = f"/collections/{COLLECTION}/points/search"
    json_bodies = [orjson.dumps({"vector": q, "limit": 10, "with_payload": True},
                                option=orjson.OPT_SERIALIZE_NUMPY) for q in queries]
    mp_bodies = [msgpack.packb({"vector": q.tobytes(), "limit": 10, "with_payload": True})
                 for q in queries]
    mp = "application/msgpack"
    return {
        "search-json": [("POST", path, b, "application/json", "application/json")
                        for b in json_bodies],
        "search-msgpack": [("POST", path, b, mp, mp) for b in mp_bodies],
        "healthz": [("GET", "/healthz", b"", "application/json", "application/json")],
    }


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-src", required=True, type=Path)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=30)
    parser.add_argument("--block", type=int, default=200, help="requests per block")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    servers = {"this": ROOT / "src", "baseline": args.baseline_src.resolve()}
    work = Path(tempfile.mkdtemp(prefix="edge-ab-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        clients: dict[str, Client] = {}
        queries = None
        for name, src in servers.items():
            proc, port = start(src, work / name)
            procs.append(proc)
            clients[name] = Client(port)
            queries = load(clients[name], args.n, args.dim)
        assert queries is not None
        plan = requests(queries)
        times: dict[str, dict[str, list[float]]] = {s: {p: [] for p in plan} for s in servers}
        for name in servers:  # warm up both (and let inline-read decisions settle)
            for reqs in plan.values():
                for i in range(300):
                    clients[name].call(*reqs[i % len(reqs)])
        for block in range(args.blocks):
            order = list(servers) if block % 2 == 0 else list(reversed(servers))
            for path, reqs in plan.items():
                for name in order:
                    client, out = clients[name], times[name][path]
                    for i in range(args.block):
                        request = reqs[(block * args.block + i) % len(reqs)]
                        t0 = time.perf_counter()
                        client.call(*request)
                        out.append(time.perf_counter() - t0)
        result: dict[str, Any] = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "n": args.n, "dim": args.dim,
            "requests_per_path": args.blocks * args.block,
            "revisions": {name: _revision(src) for name, src in servers.items()},
            "paths": {}}
        for path in plan:
            row: dict[str, Any] = {}
            for name in servers:
                values = times[name][path]
                row[name] = {"p50_ms": round(pct(values, 50), 4),
                             "p90_ms": round(pct(values, 90), 4),
                             "p99_ms": round(pct(values, 99), 4)}
            row["p50_ratio"] = round(row["this"]["p50_ms"] / row["baseline"]["p50_ms"], 3)
            row["p99_ratio"] = round(row["this"]["p99_ms"] / row["baseline"]["p99_ms"], 3)
            result["paths"][path] = row
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"{'path':16} {'this p50':>9} {'base p50':>9} {'ratio':>6}  "
              f"{'this p99':>9} {'base p99':>9} {'ratio':>6}")
        for path, row in result["paths"].items():
            print(f"{path:16} {row['this']['p50_ms']:9.3f} {row['baseline']['p50_ms']:9.3f} "
                  f"{row['p50_ratio']:6.3f}  {row['this']['p99_ms']:9.3f} "
                  f"{row['baseline']['p99_ms']:9.3f} {row['p99_ratio']:6.3f}")
        return 0
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)


def _revision(src: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
