"""Tenant-filtered search with and without the tenant layout, side by side.

Qdrant's ``is_tenant`` makes builds group a collection's rows by tenant
(``segment/layout.py``). This bench builds the same points twice, one
collection with a plain keyword index on ``tenant`` and one with
``layout="tenant"``, and times the same tenant-filtered top-10 queries on both,
in alternating rounds (plain, tenant, plain, ...), so that both see the same
drift of the machine:

- **warm**: everything in memory;
- **cold**: before each query the sealed segments' vector pages are dropped
  from memory (``Collection.evict_vectors``), as for a collection larger than
  memory, so the query's rows come from disk.

The answers of the two collections must be identical (the filter selects a
few hundred rows, which the planner scans exactly).

    .venv/bin/python bench/tenant_bench.py --n 200000

Writes ``bench/results/tenant_bench.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import peregrine  # noqa: E402
from dataset import load_dataset  # noqa: E402
from provenance import provenance  # noqa: E402

BATCH = 5000
ROUNDS = 5


def build(db: peregrine.Database, name: str, base: np.ndarray, tenants: list[str],
          layout: str | None) -> peregrine.Collection:
    c = db.create_collection(name, base.shape[1], "cosine", index={"segment_rows": 1_000_000})
    c.create_payload_index("tenant", "keyword", layout=layout)
    for s in range(0, base.shape[0], BATCH):
        e = min(base.shape[0], s + BATCH)
        c.upsert(list(range(s, e)), base[s:e], [{"tenant": tenants[i]} for i in range(s, e)])
    c.optimize()
    return c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--tenants", type=int, default=400)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--out", default=str(ROOT / "bench/results/tenant_bench.json"))
    args = ap.parse_args()
    ds = load_dataset(200_000, 1000, build=False)
    base = np.ascontiguousarray(ds.base[: args.n], dtype=np.float32)
    queries = np.ascontiguousarray(ds.queries[: args.queries], dtype=np.float32)
    rnd = random.Random(7)
    # Tenants arrive interleaved, as users of a shared service write.
    tenants = [f"tenant-{rnd.randrange(args.tenants)}" for _ in range(args.n)]
    asked = [f"tenant-{rnd.randrange(args.tenants)}" for _ in range(args.queries)]
    work = Path(tempfile.mkdtemp(prefix="tenant-bench-"))
    out: dict[str, Any] = {
        **provenance("tenant_bench.py"),
        "n": args.n, "tenants": args.tenants, "queries": args.queries, "rounds": ROUNDS,
    }
    try:
        db = peregrine.open(work, background=False)
        cols = {"plain": build(db, "plain", base, tenants, None),
                "tenant": build(db, "tenant", base, tenants, "tenant")}

        def ask(c: peregrine.Collection, i: int) -> list[int]:
            flt = {"must": [{"key": "tenant", "match": {"value": asked[i]}}]}
            return [int(h.id) for h in c.search(queries[i], k=10, filter=flt)]  # type: ignore[call-overload]

        answers = {name: [ask(c, i) for i in range(args.queries)] for name, c in cols.items()}
        out["same_answers"] = sum(a == b for a, b in zip(answers["plain"], answers["tenant"],
                                                         strict=True))
        gc.collect()
        gc.freeze()
        for mode in ("warm", "cold"):
            times: dict[str, list[float]] = {"plain": [], "tenant": []}
            for _ in range(ROUNDS):
                for name, c in cols.items():
                    for i in range(args.queries):
                        if mode == "cold":
                            c.evict_vectors()
                        t0 = time.perf_counter()
                        ask(c, i)
                        times[name].append(time.perf_counter() - t0)
            out[mode] = {name: {"p50_ms": float(np.percentile(ts, 50) * 1e3),
                                "p99_ms": float(np.percentile(ts, 99) * 1e3)}
                         for name, ts in times.items()}
            out[mode]["ratio_p50"] = out[mode]["plain"]["p50_ms"] / out[mode]["tenant"]["p50_ms"]
        db.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
