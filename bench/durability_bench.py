"""Sustained ingest and reopen time of the Peregrine engine.

``ingest``: upsert real-text vectors in batches with the default grouped
fsync while the background optimizer seals and indexes, and report
vectors/s (and the same with fsync="always" for contrast).
``reopen``: build an N-vector collection once (cached on disk), then time
``peregrine.open`` + first search in fresh processes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import peregrine

CACHE = Path(os.environ.get("PEREGRINE_BENCH_CACHE", Path.home() / ".cache" / "peregrine-bench"))


def ingest(n: int, batch: int, fsync: str) -> dict[str, Any]:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from dataset import load_dataset

    base = load_dataset(n, 1000).base.astype(np.float32)
    directory = tempfile.mkdtemp(prefix="pg-ingest-")
    try:
        with peregrine.open(directory, fsync=fsync) as db:
            col = db.create_collection("ingest", base.shape[1], "cosine")
            payloads = [{"bucket": i % 100} for i in range(n)]
            t0 = time.perf_counter()
            batch_ms = []
            for start in range(0, n, batch):
                stop = min(n, start + batch)
                b0 = time.perf_counter()
                col.upsert(np.arange(start, stop), base[start:stop], payloads[start:stop])
                batch_ms.append((time.perf_counter() - b0) * 1e3)
            elapsed = time.perf_counter() - t0
            info = col.info()
            # Searches while the optimizer is still sealing: they must not wait for it.
            search_ms = []
            for q in base[:200]:
                s0 = time.perf_counter()
                col.search(q, 10)
                search_ms.append((time.perf_counter() - s0) * 1e3)
            during_build = col.info().index_backlog_segments > 0
        return {"n": n, "batch": batch, "fsync": fsync, "seconds": elapsed,
                "vectors_per_s": n / elapsed, "sealed_during_ingest": info.sealed_segments,
                "index_backlog_segments": info.index_backlog_segments,
                "batch_p50_ms": float(np.percentile(batch_ms, 50)),
                "batch_max_ms": float(np.max(batch_ms)),
                "search_p50_ms_while_indexing": float(np.percentile(search_ms, 50)),
                "search_max_ms_while_indexing": float(np.max(search_ms)),
                "backlog_still_pending_after_searches": during_build}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def build_reopen_db(n: int, dim: int) -> Path:
    directory = CACHE / f"reopen-{n}x{dim}"
    if (directory / "READY").exists():
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    rng = np.random.default_rng(7)
    # No background optimizer: frozen segments wait and optimize() builds the
    # one large segment once instead of sealing and then merging.
    with peregrine.open(directory, background=False) as db:
        col = db.create_collection("big", dim, "cosine",
                                   index={"m": 16, "ef_construction": 40, "segment_rows": 100_000,
                                          "max_segments": 64})
        for start in range(0, n, 50_000):
            stop = min(n, start + 50_000)
            vecs = rng.standard_normal((stop - start, dim)).astype(np.float32)
            col.upsert(np.arange(start, stop), vecs, [{"i": i} for i in range(start, stop)])
        col.optimize()
        # Leave a WAL tail so reopening also replays something.
        col.upsert(np.arange(n, n + 5000), rng.standard_normal((5000, dim)).astype(np.float32))
    (directory / "READY").touch()
    return directory


def reopen_once(directory: Path) -> dict[str, Any]:
    code = (
        "import time, numpy as np, peregrine\n"
        "t0 = time.perf_counter()\n"
        f"db = peregrine.open({str(directory)!r})\n"
        "c = db.collection('big')\n"
        "t1 = time.perf_counter()\n"
        "c.search(np.ones(c.config.dim, dtype=np.float32), 10)\n"
        "t2 = time.perf_counter()\n"
        "print(t1 - t0, t2 - t0, c.count())\n"
        "db.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout.split()
    return {"open_s": float(out[0]), "open_and_first_search_s": float(out[1]),
            "points": int(out[2])}


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("ingest")
    a.add_argument("--n", type=int, default=200_000)
    a.add_argument("--batch", type=int, default=1000)
    a.add_argument("--fsync", default="group")
    r = sub.add_parser("reopen")
    r.add_argument("--n", type=int, default=1_000_000)
    r.add_argument("--dim", type=int, default=384)
    r.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if args.cmd == "ingest":
        print(json.dumps(ingest(args.n, args.batch, args.fsync)))
    else:
        t0 = time.perf_counter()
        directory = build_reopen_db(args.n, args.dim)
        build_s = time.perf_counter() - t0
        runs = [reopen_once(directory) for _ in range(args.runs)]
        print(json.dumps({"n": args.n, "dim": args.dim, "build_s": build_s, "runs": runs}))


if __name__ == "__main__":
    main()
