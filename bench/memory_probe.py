"""Where the memory of an ingest goes: RSS growth per point, attributed.

Each variant runs in a fresh process (``--one``) so that nothing one leaves in
the allocator colours the next. A variant ingests N synthetic L2-normalised
random 384-d float32 vectors in batches of 1,000 through ``upsert`` into a
collection (HNSW m=16, ef_construction=100), calls ``optimize()`` and lets the
background threads settle, then reports:

* RSS growth over the state just before the first upsert (anon and
  file-backed separately: sealed segments memory-map their vectors and
  payloads, which shows up as file RSS once touched);
* Python objects: tracemalloc's default domain (bytes, dicts, lists, ints,
  FieldIndex structures), with the biggest allocation sites;
* numpy buffers: tracemalloc's numpy domain;
* FAISS: the byte size of each sealed segment's HNSW index (codes and graph),
  computed from the index, since FAISS allocates with C++ ``new``;
* allocator retention: what ``malloc_trim(0)`` gives back, and glibc's
  ``mallinfo2`` free-bytes figure before and after;
* the cost of the first filtered query (it loads the sealed segment's
  payload index) for the variants with a payload index.

Variants: ``none`` (no payload), ``bucket`` (``{"bucket": i % 100}``, integer
index), ``ts`` (``{"ts": i}``, all distinct, integer index), and, when asked
for, ``faiss``: a bare ``IndexHNSWFlat`` fed the same vectors, for reference.

tracemalloc's own bookkeeping is subtracted from the RSS figures it would
otherwise inflate (``--no-tracemalloc`` leaves it off altogether).
``--copy-blobs`` patches the codec in the child process to right-size the
payload blobs orjson returns (an experiment; see ``_copy_payload_blobs``).

Runtime is the HNSW builds' (the optimizer's during ingest, then
``optimize()``): about 4-6 minutes a variant at N=200000 on 2 busy cores.

    .venv/bin/python bench/memory_probe.py                  # none, bucket, ts at N=200000
    .venv/bin/python bench/memory_probe.py --n 20000 --variants none,ts

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Any

import numpy as np

DIM = 384
MB = 1 << 20
VARIANTS = ("none", "bucket", "ts", "faiss")

_libc = ctypes.CDLL("libc.so.6")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


def _mallinfo() -> dict[str, float]:
    """glibc heap figures (MB): in use, free but held, mmapped chunks."""
    try:
        fn = _libc.mallinfo2
    except AttributeError:  # glibc < 2.33
        return {}
    fn.restype = _MallInfo2
    info = fn()
    return {"heap_mb": info.arena / MB, "in_use_mb": info.uordblks / MB,
            "free_held_mb": info.fordblks / MB, "mmapped_mb": info.hblkhd / MB}


def _status() -> dict[str, float]:
    """VmRSS, RssAnon, RssFile and VmHWM (peak) of this process, in MB."""
    out: dict[str, float] = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(rest.split()[0]) / 1024
    return out


def _traced() -> dict[str, float]:
    """tracemalloc's current bytes split into Python objects and numpy buffers (MB)."""
    if not tracemalloc.is_tracing():
        return {}
    snap = tracemalloc.take_snapshot()
    numpy_domain = np.lib.tracemalloc_domain
    py = sum(s.size for s in snap.filter_traces([tracemalloc.DomainFilter(True, 0)])
             .statistics("filename"))
    npy = sum(s.size for s in snap.filter_traces(
        [tracemalloc.DomainFilter(True, numpy_domain)]).statistics("filename"))
    return {"python_mb": py / MB, "numpy_mb": npy / MB,
            "tracemalloc_self_mb": tracemalloc.get_tracemalloc_memory() / MB}


def _top_sites(limit: int = 8) -> list[dict[str, Any]]:
    """The Python allocation sites holding the most memory (numpy buffers excluded)."""
    if not tracemalloc.is_tracing():
        return []
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, 0)])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sites = []
    for stat in snap.statistics("lineno")[:limit]:
        frame = stat.traceback[0]
        sites.append({"site": f"{os.path.relpath(frame.filename, root)}:{frame.lineno}",
                      "mb": round(stat.size / MB, 2), "blocks": stat.count})
    return sites


def _faiss_bytes(index: Any) -> int:
    """Bytes an HNSW index holds: vector codes plus the graph's arrays."""
    import faiss

    index = faiss.downcast_index(index)
    storage = faiss.downcast_index(index.storage)
    codes = getattr(storage, "codes", None)
    total = int(codes.size()) if codes is not None else 0
    hnsw = index.hnsw
    total += int(hnsw.neighbors.size()) * 4 + int(hnsw.levels.size()) * 4
    total += int(hnsw.offsets.size()) * 8 + int(hnsw.assign_probas.size()) * 8
    return total


def _memory(base: dict[str, float], base_traced: dict[str, float]) -> dict[str, Any]:
    gc.collect()
    now, traced = _status(), _traced()
    tm_self = traced.get("tracemalloc_self_mb", 0.0) - base_traced.get("tracemalloc_self_mb", 0.0)
    out: dict[str, Any] = {
        "rss_mb": now["VmRSS"] - base["VmRSS"] - tm_self,
        "anon_mb": now["RssAnon"] - base["RssAnon"] - tm_self,
        "file_mb": now["RssFile"] - base["RssFile"],
        "peak_rss_mb": now["VmHWM"] - base["VmRSS"],
    }
    if traced:
        out["python_mb"] = traced["python_mb"] - base_traced["python_mb"]
        out["numpy_mb"] = traced["numpy_mb"] - base_traced["numpy_mb"]
        out["tracemalloc_self_mb"] = tm_self
    out.update(_mallinfo())
    return out


def _batches(n: int, batch: int, seed: int = 7) -> Any:
    rng = np.random.default_rng(seed)
    for start in range(0, n, batch):
        count = min(batch, n - start)
        vectors = rng.standard_normal((count, DIM), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        yield start, vectors


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 1)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def _copy_payload_blobs() -> None:
    """Experiment: store each payload blob in a bytes object of its own size.

    orjson (3.12+) returns ``bytes`` whose allocation is rounded up to at
    least 4 KiB and never shrunk; ``bytes(memoryview(b))`` is a right-sized
    copy. This patches the codec in this process only, to show what the fix
    would save.
    """
    from peregrine.vector.collection import codec

    encode = codec.encode_payload

    def encode_copied(payload: Any, position: int = 0) -> bytes:
        blob = encode(payload, position)
        return blob if blob is codec.NULL_BLOB else bytes(memoryview(blob))

    codec.encode_payload = encode_copied  # type: ignore[assignment]


def run_one(variant: str, n: int, batch: int, trace: bool,
            copy_blobs: bool = False) -> dict[str, Any]:
    import faiss

    import peregrine

    if copy_blobs:
        _copy_payload_blobs()
    result: dict[str, Any] = {"variant": variant, "n": n, "copy_blobs": copy_blobs}
    with tempfile.TemporaryDirectory(prefix="memprobe-") as tmp:
        db = collection = index = None
        if variant == "faiss":
            index = faiss.IndexHNSWFlat(DIM, 16, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 100
        else:
            db = peregrine.open(tmp)
            collection = db.create_collection("probe", DIM, "cosine",
                                              index={"m": 16, "ef_construction": 100})
            if variant != "none":
                collection.create_payload_index(variant, "integer")
        gc.collect()
        if trace:
            tracemalloc.start(1)
        base, base_traced = _status(), _traced()
        began = time.perf_counter()
        for start, vectors in _batches(n, batch):
            if index is not None:
                index.add(vectors)
                continue
            assert collection is not None
            ids = range(start, start + vectors.shape[0])
            payloads = None if variant == "none" else [{variant: i % 100 if variant == "bucket"
                                                         else i} for i in ids]
            collection.upsert(list(ids), vectors, payloads)
        result["ingest_s"] = time.perf_counter() - began
        result["after_ingest"] = _memory(base, base_traced)
        result["after_ingest"]["top_python_sites"] = _top_sites()
        if collection is not None:
            began = time.perf_counter()
            collection.optimize()
            result["optimize_s"] = time.perf_counter() - began
            time.sleep(3.0)  # the huge-page collapse and any optimizer wake-up settle
            info = collection.info()
            result["segments"] = info.segments
            result["faiss_index_mb"] = sum(
                _faiss_bytes(seg.index) for seg in collection.segments
                if hasattr(seg, "index")) / MB
        else:
            result["faiss_index_mb"] = _faiss_bytes(index) / MB
        after = _memory(base, base_traced)
        after["top_python_sites"] = _top_sites()
        result["after_optimize"] = after
        if collection is not None and variant != "none":
            query = next(_batches(1, 1, seed=11))[1][0]
            before = _memory(base, base_traced)
            began = time.perf_counter()
            value = 7 if variant == "bucket" else n // 2
            collection.search(query, k=10, filter={"must": [
                {"key": variant, "match": {"value": value}}]})
            range_filter = {"must": [{"key": variant, "range": {"gte": 10, "lt": 20}}]}
            first = time.perf_counter() - began
            t0 = time.perf_counter()
            for _ in range(20):
                collection.search(query, k=10, filter=range_filter)
            loaded = _memory(base, base_traced)
            result["first_filtered_query_s"] = first
            result["filtered_query_ms"] = (time.perf_counter() - t0) / 20 * 1000
            result["field_index_loaded"] = {
                k: loaded[k] - before[k] for k in ("rss_mb", "anon_mb", "python_mb", "numpy_mb")
                if k in loaded}
        _libc.malloc_trim(0)
        result["after_malloc_trim"] = _memory(base, base_traced)
        trimmed = result["after_optimize"]["anon_mb"] - result["after_malloc_trim"]["anon_mb"]
        result["malloc_trim_released_mb"] = trimmed
        if trace:
            tracemalloc.stop()
        if db is not None:
            db.close()
    return _round(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--variants", default="none,bucket,ts",
                        help=f"comma-separated, of {','.join(VARIANTS)} "
                        "(faiss: a few minutes more)")
    parser.add_argument("--no-tracemalloc", action="store_true")
    parser.add_argument("--copy-blobs", action="store_true",
                        help="experiment: right-size the payload blobs orjson returns")
    parser.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.n, args.batch, not args.no_tracemalloc,
                                 args.copy_blobs)))
        return
    results: dict[str, Any] = {}
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            parser.error(f"unknown variant {variant!r}; choose from {VARIANTS}")
        cmd = [sys.executable, os.path.abspath(__file__), "--one", variant, "--n", str(args.n),
               "--batch", str(args.batch)] + (["--no-tracemalloc"] if args.no_tracemalloc else []) \
            + (["--copy-blobs"] if args.copy_blobs else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            results[variant] = {"error": proc.stderr.strip().splitlines()[-5:]}
            continue
        results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps({"n": args.n, "batch": args.batch, "tracemalloc": not args.no_tracemalloc,
                      "copy_blobs": args.copy_blobs, "variants": results}))


if __name__ == "__main__":
    main()
