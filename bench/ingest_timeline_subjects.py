"""The subject processes of ``bench/ingest_timeline.py``, one subject per process.

Each subject loads the same vectors (the first N rows of a cached real-text
dataset, copied into anonymous memory before its RSS baseline is taken), does
its part and prints one JSON object on its last stdout line:

``peregrine`` / ``peregrine-http``
    Ingest through the API (``Collection.upsert``, or ``PUT .../points?wait=true``
    to a ``peregrine serve`` child) in batches of 1,000 while a sampler thread
    measures, every ``--interval-s`` until ``--tail-s`` after the last write,
    single-query search latency over a rotating window of queries, the
    collection's segments and unindexed rows, and RSS (the server's for HTTP);
    a poller thread reads the state and RSS alone every 0.5 s.
    Then ef sweeps, unfiltered and with the 1% and 50% filters, at steady state,
    and (embedded only) again after ``optimize()``.
``faiss``
    A bare ``IndexHNSWFlat`` built on the same vectors: build time, RSS growth,
    ef sweeps (filters through ``IDSelectorBitmap``).
``qdrant-edge``
    Qdrant's engine embedded (``qdrant-edge-py``), same m / ef_construct, payload
    index on ``bucket``, upserted in the same batches, then ``optimize()`` and
    the same sweeps.

Recall of the timeline samples is not computed here: each sample returns the
ids found and the range of ids that were acknowledged around each query, and
the parent computes exact ground truth over that prefix afterwards, so that
no numpy scan competes with the engine for the two cores during the run.

    .venv/bin/python bench/ingest_timeline_subjects.py SUBJECT --work DIR --base PATH --n N
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
K = 10
M, EF_CONSTRUCTION = 16, 100
COLLECTION = "timeline"
FIELD = "bucket"
# Qdrant's full_scan_threshold is in KB of vectors (its default); Peregrine's is in points.
QDRANT_FULL_SCAN_KB = 10_000
# Filters, in Qdrant's JSON (Peregrine takes the same), over payload bucket = i % 100.
FILTERS: dict[str, dict[str, Any]] = {
    "1%": {"must": [{"key": FIELD, "match": {"value": 7}}]},
    "50%": {"must": [{"key": FIELD, "range": {"lt": 50}}]},
}
FILTER_NAMES = ("none", *FILTERS)
POLL_S = 0.5  # a poller thread reads the collection's info and RSS this often

F32 = npt.NDArray[np.float32]


def filter_mask(name: str, n: int) -> npt.NDArray[np.bool_]:
    """Rows of ids 0..n-1 that pass filter ``name`` ("none" passes all)."""
    bucket = np.arange(n) % 100
    mask: npt.NDArray[np.bool_] = np.ones(n, dtype=bool)
    if name == "1%":
        mask = bucket == 7
    elif name == "50%":
        mask = bucket < 50
    return mask


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float] | npt.NDArray[Any], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else 0.0


def proc_mem(pids: list[int]) -> dict[str, float]:
    """VmRSS, RssAnon and RssFile (MB) summed over ``pids``, from /proc."""
    out = {"rss_mb": 0.0, "anon_mb": 0.0, "file_mb": 0.0}
    keys = {"VmRSS": "rss_mb", "RssAnon": "anon_mb", "RssFile": "file_mb"}
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in keys:
                    out[keys[key]] += int(value.split()[0]) / 1024
    return out


def growth(mem: dict[str, float], mem0: dict[str, float]) -> dict[str, float]:
    """RSS growth, and its anonymous and file-backed parts, over a baseline (MB)."""
    return {"rss_growth_mb": mem["rss_mb"] - mem0["rss_mb"],
            "anon_growth_mb": mem["anon_mb"] - mem0["anon_mb"],
            "file_growth_mb": mem["file_mb"] - mem0["file_mb"]}


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the server may run helpers)."""
    import cpu_pinning  # bench/ is sys.path[0]: a sibling module

    return cpu_pinning.process_tree(pid)


@dataclass(frozen=True)
class Inputs:
    """The vectors every subject uses, and the settings of the run."""

    base: F32
    queries: F32
    truths: dict[str, npt.NDArray[np.int32]]  # filter name -> (n_queries, K) exact ids
    args: argparse.Namespace

    @property
    def n(self) -> int:
        return int(self.base.shape[0])

    @property
    def dim(self) -> int:
        return int(self.base.shape[1])


def load_inputs(args: argparse.Namespace) -> Inputs:
    """Base rows copied out of the cache's mmap (so RSS does not grow as pages fault in)."""
    base = np.array(np.load(args.base, mmap_mode="r")[: args.n], dtype=np.float32)
    work = Path(args.work)
    queries = np.load(work / "queries.npy")
    truths = {name: np.load(work / f"truth-{name.rstrip('%')}.npy") for name in FILTER_NAMES}
    return Inputs(base=base, queries=queries, truths=truths, args=args)


def payloads(start: int, stop: int) -> list[dict[str, Any]]:
    return [{FIELD: i % 100} for i in range(start, stop)]


class Target(Protocol):
    """What the sweeps and the timeline need from a subject."""

    def search(self, q: F32, ef: int, flt: str) -> list[int]: ...
    def state(self) -> dict[str, Any]: ...
    def mem(self) -> dict[str, float]: ...


# -- subjects ----------------------------------------------------------------------------
class Embedded:
    """Peregrine's embedded API in this process."""

    name = "peregrine"

    def __init__(self, dim: int, quantization: str) -> None:
        import peregrine

        self.dir = tempfile.mkdtemp(prefix="pg-timeline-")
        self.mem0 = self.mem()
        self.db = peregrine.open(self.dir)
        self.col = self.db.create_collection(
            COLLECTION, dim, "cosine",
            index={"m": M, "ef_construction": EF_CONSTRUCTION, "quantization": quantization})
        self.col.create_payload_index(FIELD, "integer")

    def upsert(self, start: int, stop: int, vectors: F32) -> None:
        self.col.upsert(np.arange(start, stop), vectors, payloads(start, stop))

    def search(self, q: F32, ef: int, flt: str) -> list[int]:
        hits = self.col.search(q, K, ef=ef, filter=FILTERS.get(flt), with_payload=False)
        return [int(h.id) for h in hits]

    def state(self) -> dict[str, Any]:
        info = self.col.info()
        backlog = getattr(info, "index_backlog_segments", None)
        unindexed = int(info.points - info.indexed_points)
        status = getattr(info, "status", None)
        if status is None:  # as the HTTP face derived it (edge/qdrant/convert.py)
            idle = backlog == 0 if backlog is not None else unindexed == 0
            status = "green" if idle else "yellow"
        return {"points": int(info.points), "indexed": int(info.indexed_points),
                "unindexed": unindexed, "segments": int(info.segments),
                "sealed_segments": getattr(info, "sealed_segments", None),
                "backlog_segments": backlog, "status": str(getattr(status, "value", status))}

    def mem(self) -> dict[str, float]:
        return proc_mem([os.getpid()])

    def optimize(self) -> None:
        self.col.optimize()

    def close(self) -> None:
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Http:
    """``peregrine serve`` as a child process, spoken to in Qdrant's REST JSON."""

    name = "peregrine-http"

    def __init__(self, dim: int, quantization: str, logs: Path) -> None:
        import orjson

        self.orjson = orjson
        from httpbench.measure import free_port
        from httpbench.orchestrate import serve_command

        self.dir = Path(tempfile.mkdtemp(prefix="pg-timeline-http-"))
        self.port = free_port()
        self.command = serve_command(self.dir / "data", self.port)
        # The server refuses PEREGRINE_* variables that are not its settings.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEREGRINE_BENCH")}
        env["PEREGRINE_HTTP_ACCESS_LOG"] = "false"
        self.log_path = logs / "peregrine-http-server.log"
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                         env=env, cwd=ROOT)
        self._wait_ready()
        self.local = threading.local()
        self.mem0 = self.mem()
        body: dict[str, Any] = {"vectors": {"size": dim, "distance": "Cosine"},
                                "hnsw_config": {"m": M, "ef_construct": EF_CONSTRUCTION}}
        if quantization == "int8":
            body["quantization_config"] = {"scalar": {"type": "int8", "always_ram": True}}
        self.call("PUT", f"/collections/{COLLECTION}", body)
        self.call("PUT", f"/collections/{COLLECTION}/index?wait=true",
                  {"field_name": FIELD, "field_schema": "integer"})

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"server exited {self.proc.returncode}: {tail}")
            with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
            time.sleep(0.2)
        self.close()
        raise RuntimeError("server not ready after 180 s")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One request on this thread's keep-alive connection; the decoded ``result``."""
        data = (self.orjson.dumps(body, option=self.orjson.OPT_SERIALIZE_NUMPY)
                if body is not None else None)
        for attempt in (1, 2):
            conn: http.client.HTTPConnection | None = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                                    timeout=600)
            try:
                conn.request(method, path, body=data,
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle keep-alive connection: reconnect once.
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
        if resp.status != 200:
            raise RuntimeError(f"{method} {path} -> {resp.status}: {raw[:300]!r}")
        return self.orjson.loads(raw)["result"]

    def upsert(self, start: int, stop: int, vectors: F32) -> None:
        batch = {"ids": list(range(start, stop)), "vectors": vectors,
                 "payloads": payloads(start, stop)}
        self.call("PUT", f"/collections/{COLLECTION}/points?wait=true", {"batch": batch})

    def search(self, q: F32, ef: int, flt: str) -> list[int]:
        body: dict[str, Any] = {"vector": q, "limit": K, "params": {"hnsw_ef": ef},
                                "with_payload": False}
        if flt in FILTERS:
            body["filter"] = FILTERS[flt]
        return [int(h["id"]) for h in self.call(
            "POST", f"/collections/{COLLECTION}/points/search", body)]

    def state(self) -> dict[str, Any]:
        info = self.call("GET", f"/collections/{COLLECTION}")
        points = int(info.get("points_count") or 0)
        indexed = int(info.get("indexed_vectors_count") or 0)
        return {"points": points, "indexed": indexed, "unindexed": points - indexed,
                "segments": info.get("segments_count"), "status": info.get("status")}

    def mem(self) -> dict[str, float]:
        return proc_mem(process_tree(self.proc.pid))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Faiss:
    """A bare FAISS IndexHNSWFlat (inner product on the normalised vectors)."""

    name = "faiss"

    def __init__(self, base: F32) -> None:
        import faiss

        self.faiss: Any = faiss  # its stubs lack the HNSW search parameters
        self.threads = faiss.omp_get_max_threads()
        self.mem0 = self.mem()
        t0 = time.perf_counter()
        self.index = faiss.IndexHNSWFlat(base.shape[1], M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = EF_CONSTRUCTION
        self.index.add(base)
        self.build_s = time.perf_counter() - t0
        # Single queries on one thread, as bench/systems.py; the build used them all.
        faiss.omp_set_num_threads(1)
        self.index_bytes = int(faiss.serialize_index(self.index).nbytes)
        self.bitmaps = {name: np.packbits(filter_mask(name, base.shape[0]), bitorder="little")
                        for name in FILTERS}
        self.selectors = {name: faiss.IDSelectorBitmap(base.shape[0], faiss.swig_ptr(bits))
                          for name, bits in self.bitmaps.items()}
        self.params: dict[tuple[str, int], Any] = {}

    def search(self, q: F32, ef: int, flt: str) -> list[int]:
        params = self.params.get((flt, ef))
        if params is None:
            params = self.faiss.SearchParametersHNSW()
            params.efSearch = ef
            if flt in self.selectors:
                params.sel = self.selectors[flt]
            self.params[(flt, ef)] = params
        _, ids = self.index.search(q[None, :], K, params=params)
        return [int(i) for i in ids[0] if i >= 0]

    def state(self) -> dict[str, Any]:
        return {"points": int(self.index.ntotal), "indexed": int(self.index.ntotal),
                "unindexed": 0, "segments": 1}

    def mem(self) -> dict[str, float]:
        return proc_mem([os.getpid()])


class QdrantEdge:
    """Qdrant's engine embedded (qdrant-edge-py): an EdgeShard in a temp directory."""

    name = "qdrant-edge"

    def __init__(self, dim: int, quantization: str) -> None:
        import qdrant_edge as qe

        self.qe = qe
        self.dir = tempfile.mkdtemp(prefix="qdrant-edge-timeline-")
        self.mem0 = self.mem()
        quant = (qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, always_ram=True)
                 if quantization == "int8" else None)
        config = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
            hnsw_config=qe.HnswIndexConfig(m=M, ef_construct=EF_CONSTRUCTION,
                                           full_scan_threshold=QDRANT_FULL_SCAN_KB),
            quantization_config=quant)
        self.shard = qe.EdgeShard.create(os.path.join(self.dir, "shard"), config)
        self.shard.update(
            qe.UpdateOperation.create_field_index(FIELD, qe.PayloadSchemaType.Integer))
        self.filters = {
            "1%": qe.Filter(must=[qe.FieldCondition(key=FIELD, match=qe.MatchValue(7))]),
            "50%": qe.Filter(must=[qe.FieldCondition(key=FIELD, range=qe.RangeFloat(lt=50))]),
        }
        self.params: dict[int, Any] = {}

    def upsert(self, start: int, stop: int, vectors: F32) -> None:
        qe = self.qe
        points = [qe.Point(i, vectors[i - start].tolist(), {FIELD: i % 100})
                  for i in range(start, stop)]
        self.shard.update(qe.UpdateOperation.upsert_points(points))

    def search(self, q: F32, ef: int, flt: str) -> list[int]:
        qe = self.qe
        params = self.params.get(ef)
        if params is None:
            params = self.params[ef] = qe.SearchParams(hnsw_ef=ef)
        request = qe.SearchRequest(query=qe.Query.Nearest(q.tolist()), limit=K,
                                   filter=self.filters.get(flt), params=params,
                                   with_payload=False)
        return [int(p.id) for p in self.shard.search(request)]

    def state(self) -> dict[str, Any]:
        info = self.shard.info()
        return {"points": int(info.points_count), "indexed": int(info.indexed_vectors_count),
                "unindexed": int(info.points_count) - int(info.indexed_vectors_count),
                "segments": int(info.segments_count)}

    def mem(self) -> dict[str, float]:
        return proc_mem([os.getpid()])

    def optimize(self) -> bool:
        return bool(self.shard.optimize())

    def close(self) -> None:
        self.shard.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# -- measurements ------------------------------------------------------------------------
def recall_at_k(found: list[list[int]], truth: npt.NDArray[np.int32]) -> float:
    hits = total = 0
    for f, t in zip(found, truth, strict=True):
        want = {int(x) for x in t[:K] if x >= 0}
        hits += len(want & set(f[:K]))
        total += len(want)
    return hits / total if total else 0.0


def timed(search: Callable[[F32], list[int]], queries: F32, warmup: int = 20
          ) -> tuple[list[list[int]], list[float]]:
    """One query at a time: the ids found and each query's latency in ms."""
    for q in queries[:warmup]:
        search(q)
    found, times = [], []
    for q in queries:
        t0 = time.perf_counter()
        ids = search(q)
        times.append((time.perf_counter() - t0) * 1e3)
        found.append(ids)
    return found, times


def sweep(target: Target, inputs: Inputs) -> list[dict[str, Any]]:
    """p50/p99/recall@10 for every filter and every ef of ``--efs``."""
    out = []
    count = inputs.args.sweep_queries
    queries = inputs.queries[:count]
    for flt in FILTER_NAMES:
        for ef in inputs.args.efs:
            def one(q: F32, e: int = ef, f: str = flt) -> list[int]:
                return target.search(q, e, f)

            found, times = timed(one, queries)
            truth = inputs.truths[flt][:count]
            out.append({"filter": flt, "ef": ef, "recall": recall_at_k(found, truth),
                        "p50_ms": pct(times, 50), "p99_ms": pct(times, 99),
                        "mean_ms": float(np.mean(times))})
    return out


def settled(target: Any, inputs: Inputs, label: str) -> dict[str, Any]:
    """State, memory (before the sweeps allocate anything) and the sweeps of one phase."""
    gc.collect()
    mem = target.mem()
    state = target.state()
    log(f"{target.name}: {label}: sweeping")
    t0 = time.perf_counter()
    points = sweep(target, inputs)
    return {"state": state, "mem": mem, **growth(mem, target.mem0), "sweep": points,
            "sweep_s": time.perf_counter() - t0}


class Timeline:
    """Ingest in batches on this thread while a sampler thread measures every interval."""

    def __init__(self, target: Any, inputs: Inputs) -> None:
        self.target = target
        self.inputs = inputs
        self.args = inputs.args
        self.acked = 0  # ids 0..acked-1 are acknowledged (their upsert returned)
        self.writing = True
        self.last_write: float | None = None
        self.t0 = 0.0
        self.samples: list[dict[str, Any]] = []
        self.polls: list[dict[str, Any]] = []
        self.sampling_done = threading.Event()
        self.error: str | None = None

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def run(self) -> dict[str, Any]:
        args, base = self.args, self.inputs.base
        n, batch = base.shape[0], args.batch
        batches: list[tuple[float, float]] = []
        sampler = threading.Thread(target=self._sample_loop, name="sampler", daemon=True)
        poller = threading.Thread(target=self._poll_loop, name="poller", daemon=True)
        self.t0 = time.perf_counter()
        sampler.start()
        poller.start()
        for start in range(0, n, batch):
            stop = min(n, start + batch)
            b0 = time.perf_counter()
            self.target.upsert(start, stop, base[start:stop])
            b1 = time.perf_counter()
            self.acked = stop
            batches.append((round(b1 - self.t0, 4), round((b1 - b0) * 1e3, 3)))
        self.last_write = self.now()
        self.writing = False
        sampler.join()
        self.sampling_done.set()
        poller.join()
        if self.error:
            raise RuntimeError(f"sampler failed: {self.error}")
        ms = [b[1] for b in batches]
        first_start = batches[0][0] - batches[0][1] / 1e3
        upsert_s = self.last_write - first_start
        return {"n": n, "batch": batch, "upsert_s": upsert_s, "points_per_s": n / upsert_s,
                "batch_p50_ms": pct(ms, 50), "batch_p99_ms": pct(ms, 99), "batch_max_ms": max(ms),
                "last_write_s": self.last_write, "batches": batches, "samples": self.samples,
                "polls": self.polls}

    def _sample_loop(self) -> None:
        try:
            while self.acked == 0:  # the first sample sees at least one batch
                time.sleep(0.005)
            k = 0
            while True:
                due = k * self.args.interval_s
                wait = due - self.now()
                if wait > 0:
                    time.sleep(wait)
                if not self.writing and self.last_write is not None and (
                        self.now() > self.last_write + self.args.tail_s):
                    return
                self.samples.append(self._sample(k))
                # A sample longer than the interval skips the slots it overran.
                k = max(k + 1, int(self.now() // self.args.interval_s) + 1)
        except Exception as exc:  # reported by run(); the ingest does not stop for it
            self.error = f"{type(exc).__name__}: {exc}"
            log(f"sampler: {self.error}")

    def _poll_loop(self) -> None:
        """Every POLL_S, the collection's state and RSS (no search): finer than the samples."""
        try:
            while not self.sampling_done.is_set():
                state = self.target.state()
                mem = self.target.mem()
                self.polls.append({
                    "t_s": round(self.now(), 3),
                    **{key: state.get(key) for key in ("points", "unindexed", "segments",
                                                       "status")},
                    "rss_growth_mb": round(mem["rss_mb"] - self.target.mem0["rss_mb"], 1)})
                self.sampling_done.wait(POLL_S)
        except Exception as exc:
            self.error = f"poller: {type(exc).__name__}: {exc}"
            log(self.error)

    def _sample(self, k: int) -> dict[str, Any]:
        args, queries, n = self.args, self.inputs.queries, self.inputs.n
        t_start = self.now()
        writing = self.writing
        state = self.target.state()
        mem = self.target.mem()
        count = args.queries_per_sample
        qidx = [(k * count + j) % len(queries) for j in range(count)]
        lo, hi, found, times = [], [], [], []
        for j in qidx:
            before = self.acked
            t0 = time.perf_counter()
            ids = self.target.search(queries[j], args.ef, "none")
            times.append((time.perf_counter() - t0) * 1e3)
            after = self.acked
            # Visible rows: at least 0..before-1, at most the batch in flight after the query.
            lo.append(before)
            hi.append(after if after >= n else min(n, after + args.batch))
            found.append(ids)
        state_after = self.target.state()
        sample = {
            "k": k, "t_s": t_start, "duration_s": self.now() - t_start, "writing": writing,
            "acked": lo[0], **state, "unindexed_after": state_after["unindexed"],
            "segments_after": state_after.get("segments"), **mem,
            **growth(mem, self.target.mem0),
            "p50_ms": pct(times, 50), "p99_ms": pct(times, 99), "mean_ms": float(np.mean(times)),
            "max_ms": max(times), "ef": args.ef,
            "raw": {"queries": qidx, "lo": lo, "hi": hi, "found": found},
        }
        log(f"{self.target.name}: t={t_start:6.1f}s acked={lo[0]:>7} points={state['points']:>7} "
            f"unindexed={state['unindexed']:>6} segments={state.get('segments')} "
            f"p50={sample['p50_ms']:.2f}ms p99={sample['p99_ms']:.2f}ms "
            f"rss+{sample['rss_growth_mb']:.0f}MB")
        return sample


def run_timeline(target: Any, inputs: Inputs) -> dict[str, Any]:
    out: dict[str, Any] = {"subject": target.name, "mem0": target.mem0}
    out["timeline"] = Timeline(target, inputs).run()
    tl = out["timeline"]
    log(f"{target.name}: ingested {inputs.n} in {tl['upsert_s']:.1f} s "
        f"({tl['points_per_s']:.0f} points/s)")
    out["steady"] = settled(target, inputs, "steady state")
    if isinstance(target, Embedded):
        t0 = time.perf_counter()
        target.optimize()
        out["optimize_s"] = time.perf_counter() - t0
        log(f"{target.name}: optimize() took {out['optimize_s']:.1f} s")
        out["optimized_windows_p50_ms"] = window_p50s(target, inputs)
        out["optimized"] = settled(target, inputs, "after optimize()")
    return out


def window_p50s(target: Any, inputs: Inputs) -> list[float]:
    """p50 of each query window the timeline's samples use (sample k searches
    window k mod count), searched the same way: the like-for-like reference
    for judging whether a sample is at the optimized speed."""
    args, queries = inputs.args, inputs.queries
    count = args.queries_per_sample
    windows = max(1, -(-len(queries) // count))
    out = []
    for w in range(windows):
        times = []
        for j in range(count):
            q = queries[(w * count + j) % len(queries)]
            t0 = time.perf_counter()
            target.search(q, args.ef, "none")
            times.append((time.perf_counter() - t0) * 1e3)
        out.append(pct(times, 50))
    return out


def run_peer(target: Any, inputs: Inputs) -> dict[str, Any]:
    out: dict[str, Any] = {"subject": target.name, "mem0": target.mem0}
    if isinstance(target, Faiss):
        out.update(build_s=target.build_s, index_bytes=target.index_bytes,
                   build_threads=target.threads)
        log(f"faiss: built in {target.build_s:.1f} s on {target.threads} threads")
    else:
        base, batch = inputs.base, inputs.args.batch
        t0 = time.perf_counter()
        for start in range(0, inputs.n, batch):
            stop = min(inputs.n, start + batch)
            target.upsert(start, stop, base[start:stop])
        out["upsert_s"] = time.perf_counter() - t0
        out["points_per_s"] = inputs.n / out["upsert_s"]
        out["before_optimize"] = {"state": target.state(), "mem": target.mem()}
        t1 = time.perf_counter()
        target.optimize()
        out["optimize_s"] = time.perf_counter() - t1
        out["build_s"] = time.perf_counter() - t0
        log(f"{target.name}: upsert {out['upsert_s']:.1f} s, optimize {out['optimize_s']:.1f} s")
    out["optimized"] = settled(target, inputs, "built")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("subject", choices=("peregrine", "peregrine-http", "faiss", "qdrant-edge"))
    ap.add_argument("--work", required=True, help="folder with queries.npy and truth-*.npy")
    ap.add_argument("--base", required=True, help="base.npy of a cached dataset")
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--ef", type=int, default=64, help="ef of the timeline samples")
    ap.add_argument("--efs", default="32,64,96,128,192,256")
    ap.add_argument("--queries-per-sample", type=int, default=200)
    ap.add_argument("--sweep-queries", type=int, default=1000)
    ap.add_argument("--interval-s", type=float, default=5.0)
    ap.add_argument("--tail-s", type=float, default=120.0)
    ap.add_argument("--quantization", choices=("none", "int8"), default="none")
    args = ap.parse_args(argv)
    args.efs = [int(x) for x in str(args.efs).split(",")]
    inputs = load_inputs(args)
    target: Any
    if args.subject == "peregrine":
        target = Embedded(inputs.dim, args.quantization)
    elif args.subject == "peregrine-http":
        logs = Path(args.work) / "logs"
        logs.mkdir(exist_ok=True)
        target = Http(inputs.dim, args.quantization, logs)
    elif args.subject == "faiss":
        target = Faiss(inputs.base)
    else:
        target = QdrantEdge(inputs.dim, args.quantization)
    try:
        if args.subject.startswith("peregrine"):
            result = run_timeline(target, inputs)
        else:
            result = run_peer(target, inputs)
    finally:
        if hasattr(target, "close"):
            target.close()
    result["quantization"] = args.quantization
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
