"""Float16 versus float32 graph codes in a sealed segment, side by side.

A graph walk reads ~1000 scattered vectors per query, so halving the bytes
per visited node should show in single-query latency. Three segments of the
same real-text rows (bench/dataset.py) are compared:

- ``float32``: the HNSW graph over float32 rows (the earlier default);
- ``float16-same-graph``: that very graph with float16 codes, which isolates
  the codes from the randomness of building a graph;
- ``float16``: a segment built as Peregrine now builds it (its own graph).

Each is timed through ``SealedSegment.search`` (which rescores float16 hits
exactly) and as a raw FAISS search; the variants take turns in blocks of
100 queries so that the machine's slow phases fall on all of them.

    .venv/bin/python bench/graph_codes.py --n 200000
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import orjson

from peregrine.vector.ids import encode_ids
from peregrine.vector.segment.build import build_sealed_segment
from peregrine.vector.segment.sealed import GraphCodes, SealedSegment
from peregrine.vector.types import IndexConfig, Metric

HERE = Path(__file__).resolve().parent
K = 10


def _same_graph_float16(src: Path, dst: Path) -> None:
    """Copy a float32 segment and give its graph float16 codes."""
    shutil.copytree(src, dst)
    flat = faiss.read_index(str(src / "index.faiss"))
    rows = np.load(src / "vectors.npy")
    index = faiss.IndexHNSWSQ(rows.shape[1], faiss.ScalarQuantizer.QT_fp16,
                              flat.hnsw.nb_neighbors(1), flat.metric_type)
    index.hnsw = flat.hnsw
    index.storage.train(rows)
    index.storage.add(rows)
    index.ntotal = rows.shape[0]
    faiss.write_index(index, str(dst / "index.faiss"))
    meta = orjson.loads((dst / "meta.json").read_bytes())
    meta["codes"] = GraphCodes.FLOAT16.value
    (dst / "meta.json").write_bytes(orjson.dumps(meta))


def _summary(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99))}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--ef", type=int, default=64)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "graph_codes.json")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from dataset import load_dataset

    ds = load_dataset(args.n, 1000)
    base = np.ascontiguousarray(ds.base, dtype=np.float32)
    base = base / np.linalg.norm(base, axis=1, keepdims=True)  # cosine rows: normalised
    queries = np.ascontiguousarray(ds.queries, dtype=np.float32)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    truth = ds.ground_truth[:, :K]
    config = IndexConfig(m=16, ef_construction=100, ef=args.ef)
    keys = encode_ids(list(range(base.shape[0])))
    blobs = [b"null"] * base.shape[0]
    out: dict[str, Any] = {"command": "python bench/graph_codes.py " + " ".join(
        argv if argv is not None else sys.argv[1:]), "date": time.strftime("%Y-%m-%d %H:%M"),
        "n": base.shape[0], "dim": base.shape[1], "m": 16, "ef_construction": 100,
        "ef": args.ef, "faiss": faiss.__version__, "variants": {}}
    with tempfile.TemporaryDirectory(prefix="graph-codes-") as tmp:
        root = Path(tmp)
        dirs = {"float32": root / "f32", "float16-same-graph": root / "f16same",
                "float16": root / "f16"}
        for name, codes in (("float32", GraphCodes.FLOAT32), ("float16", None)):
            started = time.perf_counter()
            build_sealed_segment(dirs[name], base, keys, blobs, Metric.COSINE, config, [], codes)
            out["variants"].setdefault(name, {})["build_s"] = time.perf_counter() - started
            print(f"built {name} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        _same_graph_float16(dirs["float32"], dirs["float16-same-graph"])
        segments = {name: SealedSegment(0, d, Metric.COSINE, config) for name, d in dirs.items()}
        time.sleep(5)  # the huge-page collapse of the three indexes runs in the background
        params = faiss.SearchParametersHNSW()
        params.efSearch = args.ef
        timings: dict[str, list[float]] = {}
        found: dict[str, list[list[int]]] = {name: [[]] * len(queries) for name in segments}
        block = 100
        for _ in range(args.passes):
            for start in range(0, len(queries), block):
                for name, seg in segments.items():
                    raw = timings.setdefault(name + " raw FAISS", [])
                    full = timings.setdefault(name, [])
                    for i in range(start, min(start + block, len(queries))):
                        q = queries[i : i + 1]
                        t0 = time.perf_counter()
                        _, rows = seg.search(q, K, None, args.ef, False)
                        t1 = time.perf_counter()
                        seg.index.search(queries[(i + 500) % len(queries)][None], K, params=params)
                        t2 = time.perf_counter()
                        full.append(t1 - t0)
                        raw.append(t2 - t1)
                        found[name][i] = rows[0].tolist()
        for name, seg in segments.items():
            hits = [len(set(f) & set(t.tolist())) for f, t in zip(found[name], truth, strict=True)]
            entry = out["variants"].setdefault(name, {})
            entry["recall_at_10"] = float(np.mean(hits)) / K
            entry["index_mb"] = (dirs[name] / "index.faiss").stat().st_size / 2**20
            entry["segment_search"] = _summary(timings[name])
            entry["raw_faiss"] = _summary(timings[name + " raw FAISS"])
            seg.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"{'variant':20s} {'recall':>7s} {'index MiB':>9s} {'segment p50/p90/p99 ms':>24s} "
          f"{'raw FAISS p50/p90/p99 ms':>26s}")
    for name, v in out["variants"].items():
        s, r = v["segment_search"], v["raw_faiss"]
        print(f"{name:20s} {v['recall_at_10']:7.4f} {v['index_mb']:9.1f} "
              f"{s['p50_ms']:.3f}/{s['p90_ms']:.3f}/{s['p99_ms']:.3f}".rjust(24) + "  "
              f"{r['p50_ms']:.3f}/{r['p90_ms']:.3f}/{r['p99_ms']:.3f}".rjust(26))
    return 0


if __name__ == "__main__":
    sys.exit(main())
