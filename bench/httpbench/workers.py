"""What runs in the subprocesses: latency and throughput workers, the control server,
the in-process build and Chroma's loader (``_worker``, ``_floor_server``, ``_build``,
``_chroma_load``). Everything here may run under ``.venv-peers``: only the standard
library and numpy at module level.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np

# A sibling module; these run with bench/ on sys.path, workers included.
from cpu_pinning import CpuPinning
from httpbench.clients import SearchClient, make_client, parse_server_timing
from httpbench.common import (
    CHROMA_BATCH,
    COLLECTION,
    EF,
    EF_CONSTRUCTION,
    FLOOR,
    IDLE_POLL,
    INPROC_PAIRED,
    LATENCY_BLOCK,
    PINNED,
    VARIANT_SETTLE,
    K,
    M,
    base_kind,
    pct,
)


class PolledBlock:
    """The run's idle pollers resumed (SIGCONT) for one block, stopped (SIGSTOP) after."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)

    def _signal(self, sig: signal.Signals) -> None:
        for pid in self.pids:
            os.kill(pid, sig)

    def __enter__(self) -> None:
        self._signal(signal.SIGCONT)

    def __exit__(self, *exc: object) -> None:
        self._signal(signal.SIGSTOP)


def _timed_block(client: SearchClient, block: np.ndarray, start: int, pass_no: int,
                 times: list[float], ids: list[list[int]]) -> int:
    """Time one block of queries; returns how many answers differed from pass 0."""
    mismatches = 0
    for i, q in enumerate(block, start):
        t0 = time.perf_counter()
        found = client.search(q)
        times.append((time.perf_counter() - t0) * 1e3)
        if pass_no == 0:
            ids.append(found)
        elif found != ids[i]:
            mismatches += 1
    return mismatches


def worker_latency(clients: dict[str, SearchClient], queries: np.ndarray, passes: int,
                   warmup: int,
                   variants: dict[str, contextlib.AbstractContextManager[Any]] | None = None
                   ) -> dict[str, dict[str, Any]]:
    """Sequential queries, one at a time: a warm-up pass, then ``passes`` timed passes.

    With several clients the paths take turns in blocks of ``LATENCY_BLOCK`` queries
    (the order rotating), so that this machine's drift in speed, which is large, hits
    every path alike. Blocks rather than single queries: switching paths on every
    query lets the heaviest client (qdrant-client's pydantic layers) evict the
    server's caches between two searches of the others, which inflated their
    engine time by ~0.4 ms in a trial run; an in-process loop never pays that.
    A path in ``variants`` runs each block inside its context manager (the server
    and this process pinned to separate CPUs, or idle pollers running), after a few
    untimed queries that refill the caches a move of threads cooled.
    """
    variants = variants or {}
    names = list(clients)
    for q in queries[:warmup]:  # interleaved too: no connection sits idle meanwhile
        for name in names:
            clients[name].search(q)
    for c in clients.values():
        c.reconnects = 0
    times: dict[str, list[float]] = {n: [] for n in names}
    ids: dict[str, list[list[int]]] = {n: [] for n in names}
    mismatch = dict.fromkeys(names, 0)
    for c in clients.values():
        c.keep_timing = True
    for p in range(passes):
        for b, start in enumerate(range(0, len(queries), LATENCY_BLOCK)):
            block = queries[start:start + LATENCY_BLOCK]
            for j in range(len(names)):
                name = names[(b + p + j) % len(names)]
                client = clients[name]
                # As timeit does: the client's own garbage collection (qdrant-client
                # makes plenty) must not land inside another path's timed request.
                gc.collect()
                gc.disable()
                try:
                    variant = variants.get(name)
                    with variant or contextlib.nullcontext():
                        if variant is not None:  # untimed: a move of threads cools caches
                            for q in block[:VARIANT_SETTLE]:
                                client.search(q)
                        timed = _timed_block(client, block, start, p, times[name], ids[name])
                finally:
                    gc.enable()
                mismatch[name] += timed
    out: dict[str, dict[str, Any]] = {}
    for name, client in clients.items():
        arr = np.asarray(times[name])
        timing: dict[str, float] = {}
        if client.server_timing:
            parsed = [parse_server_timing(h) for h in client.server_timing]
            for key in sorted({k for t in parsed for k in t}):
                timing[key] = pct([t[key] for t in parsed if key in t], 50)
            timing["total"] = pct([sum(t.values()) for t in parsed], 50)
        out[name] = {
            "n_requests": len(arr), "passes": passes, "warmup": warmup,
            "interleaved_with": [n for n in names if n != name],
            "p50_ms": pct(arr, 50), "p90_ms": pct(arr, 90), "p99_ms": pct(arr, 99),
            "mean_ms": float(arr.mean()), "max_ms": float(arr.max()),
            "server_timing_p50_ms": timing, "ids": ids[name], "repeat_mismatch": mismatch[name],
            "encoder": client.encoder, "reconnects": client.reconnects,
        }
    return out


def worker_throughput(kind: str, target: str, queries: np.ndarray, threads: int, offset: int,
                      duration: float, warmup: int) -> dict[str, Any]:
    """``threads`` clients (threads) in this process, released by a "go" line on stdin."""
    if kind == "inproc":
        shared = make_client(kind, target)
        clients = [shared] * threads
    else:
        clients = [make_client(kind, target) for _ in range(threads)]
    nq = len(queries)
    for c in clients:
        for i in range(warmup):
            c.search(queries[(offset + i) % nq])
    for c in clients:
        c.reconnects = 0
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("no go")
    counts = [0] * threads
    errors = [0] * threads
    lat: list[list[float]] = [[] for _ in range(threads)]
    first_error: list[str] = []
    start = time.perf_counter()
    deadline = start + duration

    def loop(t: int) -> None:
        client, i = clients[t], offset + 131 * t
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                return
            try:
                client.search(queries[i % nq])
            except Exception as exc:
                errors[t] += 1
                if not first_error:
                    first_error.append(repr(exc)[:500])
                i += 1
                continue
            t1 = time.perf_counter()
            if t1 <= deadline:
                counts[t] += 1
                lat[t].append((t1 - t0) * 1e3)
            i += 1

    workers = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    unique = {id(c): c for c in clients}.values()
    reconnects = sum(c.reconnects for c in unique)
    for c in unique:
        c.close()
    return {"count": sum(counts), "reconnects": reconnects, "errors": sum(errors),
            "first_error": first_error[0] if first_error else None,
            "duration_s": duration, "elapsed_s": elapsed,
            "latencies_ms": [round(x, 4) for row in lat for x in row]}


def worker_main(args: argparse.Namespace) -> int:
    queries = np.load(args.queries)
    if args.mode == "latency":
        targets = {FLOOR: args.floor, INPROC_PAIRED: args.inproc}
        clients = {kind: make_client(kind, targets.get(base_kind(kind), args.target))
                   for kind in args.client.split(",")}
        variants: dict[str, contextlib.AbstractContextManager[Any]] = {
            kind: CpuPinning(args.floor_pid if base_kind(kind) == FLOOR else args.server_pid)
            for kind in clients if kind.endswith(PINNED)}
        pollers = [int(pid) for pid in args.poller_pids.split(",") if pid]
        variants.update({kind: PolledBlock(pollers) for kind in clients
                         if kind.endswith(IDLE_POLL)})
        try:
            res: dict[str, Any] = worker_latency(clients, queries, args.passes, args.warmup,
                                                 variants)
        finally:
            for client in clients.values():
                client.close()
    else:
        res = worker_throughput(args.client, args.target, queries, args.threads, args.offset,
                                args.duration, args.warmup)
    print(json.dumps(res), flush=True)
    return 0


def floor_server_main(args: argparse.Namespace) -> int:
    """Serve the control app: read the body, busy-wait, answer 10 fixed hits."""
    import uvicorn

    wait_s = args.work_us / 1e6
    hits = [{"id": i, "version": 0, "score": 0.5, "payload": None, "vector": None}
            for i in range(K)]
    answer = json.dumps({"result": hits, "status": "ok", "time": wait_s}).encode()
    head = [(b"content-type", b"application/json"),
            (b"content-length", str(len(answer)).encode())]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        end = time.perf_counter() + wait_s
        while time.perf_counter() < end:
            pass
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send({"type": "http.response.body", "body": answer})

    # The settings `peregrine serve` gives uvicorn (edge/http/server.py), less its
    # connection guards (edge/http/transport.py), which cost nothing on this path.
    uvicorn.run(app, host="127.0.0.1", port=int(args.target), http="httptools", loop="uvloop",
                lifespan="off", log_level="warning", access_log=False, server_header=False,
                proxy_headers=False, timeout_keep_alive=75)
    return 0


def build_main(args: argparse.Namespace) -> int:
    """Build the Peregrine collection in-process (fastest): upsert, then one HNSW build."""
    import peregrine

    base = np.load(args.base, mmap_mode="r")[: args.n]
    t0 = time.perf_counter()
    db = peregrine.open(args.dir)
    # One mutable segment holds everything (segment_rows > n), so that the only HNSW
    # build is optimize()'s single final segment instead of 20k-row builds merged later.
    col = db.create_collection(COLLECTION, dim=int(base.shape[1]), metric="cosine",
                               index={"m": M, "ef_construction": EF_CONSTRUCTION, "ef": EF,
                                      "segment_rows": args.n + 1})
    step = 5000
    for start in range(0, args.n, step):
        stop = min(args.n, start + step)
        col.upsert(np.arange(start, stop), np.ascontiguousarray(base[start:stop]),
                   [{"bucket": i % 100} for i in range(start, stop)])
    upsert_s = time.perf_counter() - t0
    col.optimize()
    info = col.info()
    db.close()
    total = time.perf_counter() - t0
    print(json.dumps({"build_s": total, "upsert_s": upsert_s, "index_s": total - upsert_s,
                      "sealed_segments": info.sealed_segments,
                      "unindexed_rows": info.unindexed_points, "points": info.points}))
    return 0


def chroma_load_main(args: argparse.Namespace) -> int:
    """Create the Chroma collection through its client and add the vectors in batches."""
    import chromadb

    u = urlsplit(args.target)
    client = chromadb.HttpClient(host=u.hostname or "127.0.0.1", port=u.port or 8000)
    max_batch = int(client.get_max_batch_size())
    step = min(CHROMA_BATCH, max_batch)
    base = np.load(args.base, mmap_mode="r")[: args.n]
    col = client.create_collection(
        COLLECTION, embedding_function=None,
        configuration={"hnsw": {"space": "cosine", "max_neighbors": M,
                                "ef_construction": EF_CONSTRUCTION, "ef_search": EF}})
    t0 = time.perf_counter()
    for start in range(0, args.n, step):
        stop = min(args.n, start + step)
        col.add(ids=[str(i) for i in range(start, stop)],
                embeddings=np.ascontiguousarray(base[start:stop]))
    add_s = time.perf_counter() - t0
    count = col.count()
    # The first query after a bulk add may wait for the log to be applied to the index.
    t1 = time.perf_counter()
    col.query(query_embeddings=[np.asarray(base[0])], n_results=K, include=["distances"])
    first_query_s = time.perf_counter() - t1
    print(json.dumps({"build_s": add_s, "count": count, "batch": step, "max_batch": max_batch,
                      "first_query_s": first_query_s,
                      "configuration": json.loads(json.dumps(col.configuration, default=str)),
                      "version": chromadb.__version__}))
    return 0
