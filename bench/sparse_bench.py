"""Sparse (BM25) and hybrid search, side by side in one run, on real text.

Corpus and queries are the cached real-text dataset of ``bench/dataset.py``
(Python docstrings and Debian package descriptions, all-MiniLM-L6-v2
embeddings; held-out texts as queries). Everything runs in this one process,
one query at a time:

1. **BM25, Peregrine vs bm25s.** The same tokens (Peregrine's BM25 tokenizer:
   lowercase words, English stopwords out) feed both. Peregrine stores each
   text as a sparse vector (``Bm25Encoder`` with ``avg_len`` set to the
   corpus' real average, so the formulas agree) in a ``modifier: idf`` sparse
   vector and searches it exactly; bm25s (``method="lucene"``, k1 1.2, b 0.75)
   ranks the same corpus. Reported: how many queries get the same top-10 ids
   in the same order (ties and hash collisions aside), and p50/p99 latency
   from query text to top-10 ids.
2. **Hybrid vs dense alone**, through the vector face's front door on one
   collection (named dense vector, HNSW, plus the BM25 sparse vector): dense
   top-10, and prefetch dense 20 + sparse 20 fused by RRF. Reported: p50/p99
   and recall@10 against the exact dense neighbours (what fusion gives up of
   them) and the overlap with BM25's top-10 (what it brings in).
3. **Named vs unnamed**: the same dense vectors in a collection whose one
   vector is unnamed and in one where it is named: ingest rate, bytes on disk
   per point after optimising, and search p50.

    .venv/bin/python bench/sparse_bench.py --n 200000

Writes ``bench/results/sparse_bench.json`` and ``docs/sparse-benchmark.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from dataset import load_dataset  # noqa: E402
from peregrine.vector.service import (  # noqa: E402
    Bm25Encoder,
    DenseSpec,
    Fusion,
    Metric,
    NearestQuery,
    Prefetch,
    ReadOptions,
    SparseModifier,
    VectorService,
    VectorSettings,
)
from provenance import provenance  # noqa: E402

BATCH = 2000
HYBRID_ROUNDS = 5  # alternating rounds of dense and hybrid queries


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(samples) * 1000.0
    return {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99))}


def timed(fn: Callable[[int], Any], n: int, warmup: int = 20) -> tuple[list[Any], list[float]]:
    # The harness holds the corpus as Python objects (200k texts and token
    # lists, bm25s's vocabulary), which a server process does not: they are
    # moved out of the garbage collector's generations before timing, or each
    # collection would walk them at the expense of whichever side allocates more.
    gc.collect()
    gc.freeze()
    for i in range(min(warmup, n)):
        fn(i)
    out, times = [], []
    for i in range(n):
        t0 = time.perf_counter()
        out.append(fn(i))
        times.append(time.perf_counter() - t0)
    return out, times


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def bm25_vs_library(svc: VectorService, texts: list[str], qtexts: list[str],
                    tokens: list[list[str]], enc: Bm25Encoder) -> dict[str, Any]:
    import bm25s

    t0 = time.perf_counter()
    lib = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    lib.index(tokens, show_progress=False)
    lib_index_s = time.perf_counter() - t0
    vocab = lib.vocab_dict

    def ours(i: int) -> list[tuple[int, float]]:
        q = enc.encode_queries([qtexts[i]])[0]
        hits = svc.query("bench", NearestQuery(q), ReadOptions(limit=10, using="bm25"))
        return [(int(h.id), h.score) for h in hits]  # type: ignore[call-overload]

    def theirs(i: int) -> list[int]:
        terms = [t for t in dict.fromkeys(enc.tokens(qtexts[i])) if t in vocab]
        if not terms:
            return []
        docs, _ = lib.retrieve([terms], k=10, show_progress=False, n_threads=1)
        return [int(d) for d in docs[0]]

    nq = len(qtexts)
    got_ours, t_ours = timed(ours, nq)
    _, t_theirs = timed(theirs, nq)
    same_order = same_up_to_ties = 0
    for i, hits in enumerate(got_ours):
        terms = [t for t in dict.fromkeys(enc.tokens(qtexts[i])) if t in vocab]
        scores = lib.get_scores(terms).astype(np.float64) * 2.2 if terms else np.zeros(1)
        order = np.argsort(-scores, kind="stable")[:10]
        expect = [int(d) for d in order if scores[d] > 0]
        ids = [pid for pid, _ in hits]
        same_order += ids == expect
        # The same ranking up to ties: the same score at every rank, and each
        # returned document scored the same by the library.
        mine = np.array([sc for _, sc in hits])
        ok = len(ids) == len(expect) and np.allclose(mine, scores[expect], rtol=1e-4) and \
            np.allclose(mine, scores[ids] if ids else mine, rtol=1e-4)
        same_up_to_ties += bool(ok)
    return {"queries": nq, "same_top10_order": same_order,
            "same_top10_up_to_ties": same_up_to_ties,
            "peregrine": percentiles(t_ours), "bm25s": percentiles(t_theirs),
            "bm25s_index_s": lib_index_s}


def hybrid_vs_dense(svc: VectorService, queries: np.ndarray, qtexts: list[str],
                    gt: np.ndarray, enc: Bm25Encoder, bm25_top: list[list[int]]
                    ) -> dict[str, Any]:
    nq = len(qtexts)
    sparse_q = enc.encode_queries(qtexts)

    def dense(i: int) -> list[int]:
        hits = svc.search("bench", queries[i], ReadOptions(limit=10))
        return [int(h.id) for h in hits]  # type: ignore[call-overload]

    def hybrid(i: int) -> list[int]:
        stages = (Prefetch(NearestQuery(queries[i]), limit=20, using="dense"),
                  Prefetch(NearestQuery(sparse_q[i]), limit=20, using="bm25"))
        hits = svc.query("bench", Fusion("rrf"), ReadOptions(limit=10), stages)
        return [int(h.id) for h in hits]  # type: ignore[call-overload]

    # Alternating rounds (all dense queries, then all hybrid ones, and again):
    # both series see the same drift of this machine, which moves absolute
    # latencies by up to 2x within an hour.
    got: dict[str, list[Any]] = {}
    times: dict[str, list[float]] = {"dense": [], "hybrid": []}
    rounds: dict[str, list[float]] = {"dense": [], "hybrid": []}
    for r in range(HYBRID_ROUNDS):
        for name, fn in (("dense", dense), ("hybrid", hybrid)):
            ids, ts = timed(fn, nq, warmup=20 if r == 0 else 0)
            got.setdefault(name, ids)
            times[name] += ts
            rounds[name].append(float(np.percentile(ts, 50)))
    out: dict[str, Any] = {"rounds": HYBRID_ROUNDS}
    for name in ("dense", "hybrid"):
        recall = float(np.mean([len(set(g) & set(gt[i, :10].tolist())) / 10
                                for i, g in enumerate(got[name])]))
        overlap = float(np.mean([len(set(g) & set(bm25_top[i])) / max(1, len(bm25_top[i]))
                                 for i, g in enumerate(got[name])]))
        out[name] = {**percentiles(times[name]), "recall_at_10": recall,
                     "bm25_overlap": overlap}
    out["ratio_p50"] = out["hybrid"]["p50_ms"] / out["dense"]["p50_ms"]
    out["ratio_p50_by_round"] = [h / d for h, d in zip(rounds["hybrid"], rounds["dense"],
                                                       strict=True)]
    return out


def named_vs_unnamed(base: np.ndarray, queries: np.ndarray, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    n = base.shape[0]
    for label in ("unnamed", "named", "unnamed_again"):
        root = work / label
        svc = VectorService.open(root, VectorSettings(cache_entries=0))
        try:
            name = "" if label.startswith("unnamed") else "dense"
            svc.create_collection("c", base.shape[1], "cosine", {"segment_rows": 50_000},
                                  vector_name=name)
            t0 = time.perf_counter()
            for start in range(0, n, BATCH):
                rows = base[start:start + BATCH]
                ids = list(range(start, start + rows.shape[0]))
                if name:
                    svc.upsert_points("c", ids, [{"dense": r} for r in rows])
                else:
                    svc.upsert("c", ids, rows)
            ingest = time.perf_counter() - t0
            svc.optimize("c")
            search = svc.search
            _, times = timed(lambda i, search=search: search(  # type: ignore[misc]
                "c", queries[i], ReadOptions(limit=10)), len(queries))
            out[label] = {"ingest_points_per_s": n / ingest,
                          "disk_bytes_per_point": dir_bytes(root / "collections") / n,
                          **percentiles(times)}
        finally:
            svc.close()
    return out


def secondary_vector(base: np.ndarray, queries: np.ndarray, work: Path) -> dict[str, Any]:
    """A named vector beside the primary one, holding the same vectors: searched
    through its own graph in the sealed segment, against the primary vector's
    graph and against the exact scan (the same segment with its graph removed)."""
    n = base.shape[0]
    exact = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    out: dict[str, Any] = {}
    root = work / "secondary"
    for phase in ("graph", "scan"):
        svc = VectorService.open(root, VectorSettings(cache_entries=0))
        try:
            if phase == "graph":
                svc.create_collection("c", base.shape[1], "cosine", {"segment_rows": 50_000},
                                      vector_name="main",
                                      named={"other": DenseSpec(base.shape[1], Metric.COSINE)})
                for start in range(0, n, BATCH):
                    rows = base[start:start + BATCH]
                    svc.upsert("c", list(range(start, start + rows.shape[0])), rows,
                               side=[{"other": r} for r in rows])
                svc.optimize("c")
            runs = (("primary", "main"), ("graph", "other")) if phase == "graph" else (
                ("scan", "other"),)
            for label, using in runs:
                def ids(i: int, using: str = using, svc: VectorService = svc) -> list[int]:
                    hits = svc.query("c", NearestQuery(queries[i]),
                                     ReadOptions(limit=10, using=using))
                    return [int(h.id) for h in hits]  # type: ignore[call-overload]

                got, times = timed(ids, len(queries))
                out[label] = {**percentiles(times), "recall_at_10": float(np.mean(
                    [len(set(g) & set(exact[i].tolist())) / 10 for i, g in enumerate(got)]))}
        finally:
            svc.close()
        if phase == "graph":  # as a segment built before named vectors had graphs
            for side in list((root / "collections").rglob("side")):
                shutil.rmtree(side)
    out["n"] = n
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--named-n", type=int, default=50_000)
    ap.add_argument("--out", default=str(ROOT / "bench/results/sparse_bench.json"))
    ap.add_argument("--doc", default=str(ROOT / "docs/sparse-benchmark.md"))
    args = ap.parse_args()

    ds = load_dataset(200_000, 1000, build=False)
    n, nq = args.n, args.queries
    texts, qtexts = list(ds.base_texts[:n]), list(ds.query_texts[:nq])
    base = np.ascontiguousarray(ds.base[:n], dtype=np.float32)
    queries = np.ascontiguousarray(ds.queries[:nq], dtype=np.float32)
    if n == ds.base.shape[0]:
        gt = ds.ground_truth[:nq]
    else:
        gt = np.argsort(-(queries @ base.T), axis=1)[:, :10]

    t0 = time.perf_counter()
    tokenizer = Bm25Encoder()
    tokens = [tokenizer.tokens(t) for t in texts]
    avg_len = float(np.mean([len(t) for t in tokens])) or 1.0
    enc = Bm25Encoder(avg_len=avg_len)
    docs = enc.encode_documents(texts)
    encode_s = time.perf_counter() - t0

    work = Path(tempfile.mkdtemp(prefix="sparse-bench-"))
    results: dict[str, Any] = {
        **provenance("sparse_bench.py"),
        "n": n, "queries": nq, "avg_doc_tokens": avg_len, "encode_s": encode_s,
    }
    try:
        svc = VectorService.open(work / "main", VectorSettings(cache_entries=0))
        try:
            svc.create_collection("bench", base.shape[1], "cosine",
                                  {"segment_rows": 50_000}, vector_name="dense",
                                  sparse={"bm25": SparseModifier.IDF})
            t0 = time.perf_counter()
            for start in range(0, n, BATCH):
                stop = min(n, start + BATCH)
                svc.upsert("bench", list(range(start, stop)), base[start:stop],
                           side=[{"bm25": docs[i]} for i in range(start, stop)])
            results["ingest_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            svc.optimize("bench")
            results["optimize_s"] = time.perf_counter() - t0
            results["bm25"] = bm25_vs_library(svc, texts, qtexts, tokens, enc)
            bm25_top = [[int(h.id) for h in svc.query(  # type: ignore[call-overload]
                "bench", NearestQuery(q), ReadOptions(limit=10, using="bm25"))]
                for q in enc.encode_queries(qtexts)]
            results["hybrid"] = hybrid_vs_dense(svc, queries, qtexts, gt, enc, bm25_top)
        finally:
            svc.close()
        # A restart: the first sparse query loads the sealed segment's saved lists.
        t0 = time.perf_counter()
        svc = VectorService.open(work / "main", VectorSettings(cache_entries=0))
        try:
            results["reopen_s"] = time.perf_counter() - t0
            first = enc.encode_queries(qtexts[:1])[0]
            t0 = time.perf_counter()
            svc.query("bench", NearestQuery(first), ReadOptions(limit=10, using="bm25"))
            results["first_sparse_query_after_reopen_s"] = time.perf_counter() - t0
        finally:
            svc.close()
        m = min(args.named_n, n)
        results["named"] = named_vs_unnamed(base[:m], queries, work / "named")
        results["named"]["n"] = m
        results["secondary"] = secondary_vector(base[:m], queries, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    write_doc(results, Path(args.doc))
    print(json.dumps(results))


def write_doc(r: dict[str, Any], path: Path) -> None:
    b, h, nm = r["bm25"], r["hybrid"], r["named"]
    un = nm["unnamed"]
    lines = [
        "# Sparse and hybrid search benchmark",
        "",
        f"Generated by `{r['command']}` on {r['machine']} ({r['date']}, commit "
        f"{r['git']}). {r['n']:,} real texts (Python docstrings and Debian package "
        f"descriptions, {r['avg_doc_tokens']:.1f} BM25 tokens on average), {r['queries']} "
        "held-out texts as queries, one query at a time in one process. The harness's "
        "own Python objects (the corpus, its token lists, bm25s's vocabulary) are frozen "
        "out of the garbage collector before each timed series (`gc.freeze`), as a "
        "server does not hold them.",
        "",
        "## BM25: Peregrine's sparse vectors vs bm25s",
        "",
        "Both rank the same tokens with the same formula (Lucene's BM25, k1 1.2, b 0.75, "
        "IDF `ln(1 + (N - df + 0.5) / (df + 0.5))`); Peregrine stores each text as a "
        "sparse vector and searches it exactly with `modifier: idf`. Latency is from "
        "query text to top-10 ids.",
        "",
        "| | p50 ms | p99 ms |",
        "|---|---|---|",
        f"| Peregrine (`query` with `using: bm25`) | {b['peregrine']['p50_ms']:.2f} | "
        f"{b['peregrine']['p99_ms']:.2f} |",
        f"| bm25s (`retrieve`, 1 thread) | {b['bm25s']['p50_ms']:.2f} | "
        f"{b['bm25s']['p99_ms']:.2f} |",
        "",
        f"Same top-10 up to the order of tied scores: **{b['same_top10_up_to_ties']} of "
        f"{b['queries']}** queries (the same score at every rank, and every returned "
        f"document scored the same by bm25s); identical id order: "
        f"{b['same_top10_order']}. Short texts tie often: Peregrine ranks a tie by the "
        "lower row (the earlier written), which can differ from bm25s's order. A query "
        "that differs otherwise meets a 32-bit token hash collision (Peregrine hashes "
        "tokens as fastembed does; bm25s keeps a vocabulary).",
        "",
        "## Hybrid (dense + sparse, RRF) vs dense alone",
        "",
        "One collection: the named dense vector (HNSW) and the BM25 sparse vector. Hybrid "
        "is `prefetch` dense 20 + sparse 20, fused by RRF, through the vector face's "
        f"front door. The two run in {h['rounds']} alternating rounds of the "
        f"{r['queries']} queries (dense, hybrid, dense, ...), so that both see the same "
        "drift of the machine; p50 and p99 are over all rounds.",
        "",
        "| | p50 ms | p99 ms | recall@10 vs exact dense | overlap with BM25 top-10 |",
        "|---|---|---|---|---|",
        f"| dense | {h['dense']['p50_ms']:.2f} | {h['dense']['p99_ms']:.2f} | "
        f"{h['dense']['recall_at_10']:.3f} | {h['dense']['bm25_overlap']:.3f} |",
        f"| hybrid | {h['hybrid']['p50_ms']:.2f} | {h['hybrid']['p99_ms']:.2f} | "
        f"{h['hybrid']['recall_at_10']:.3f} | {h['hybrid']['bm25_overlap']:.3f} |",
        "",
        f"Hybrid p50 / dense p50: **{h['ratio_p50']:.2f}x** (by round: "
        + ", ".join(f"{x:.2f}" for x in h["ratio_p50_by_round"]) + ").",
        "",
        f"After a restart the first sparse query takes "
        f"{r['first_sparse_query_after_reopen_s'] * 1e3:.0f} ms (the sealed segment's saved "
        f"lists loaded; the database opened in {r['reopen_s'] * 1e3:.0f} ms).",
        "",
        "## Named vs unnamed dense vector",
        "",
        f"{nm['n']:,} points, the same vectors; `unnamed_again` repeats the first "
        "collection as a control for this machine's drift.",
        "",
        "| | ingest points/s | disk bytes/point | search p50 ms |",
        "|---|---|---|---|",
    ]
    for label in ("unnamed", "named", "unnamed_again"):
        x = nm[label]
        lines.append(f"| {label} | {x['ingest_points_per_s']:,.0f} | "
                     f"{x['disk_bytes_per_point']:,.0f} | {x['p50_ms']:.3f} |")
    lines += [
        "",
        f"Named / unnamed disk bytes per point: "
        f"{nm['named']['disk_bytes_per_point'] / un['disk_bytes_per_point']:.3f}x.",
        "",
    ]
    sec = r.get("secondary")
    if sec:
        lines += [
            "## A second named dense vector",
            "",
            f"{sec['n']:,} points with a primary vector `main` and a second named vector "
            "`other` holding the same vectors, after optimising: `other` through its own "
            "graph in the sealed segment, the primary through its graph, and `other` by "
            "the exact scan (the same segment with its graph removed). Recall is against "
            "the exact top-10.",
            "",
            "| | p50 ms | p99 ms | recall@10 |",
            "|---|---|---|---|",
        ]
        for label, what in (("primary", "primary vector, its graph"),
                            ("graph", "second vector, its graph"),
                            ("scan", "second vector, exact scan")):
            x = sec[label]
            lines.append(f"| {what} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} | "
                         f"{x['recall_at_10']:.3f} |")
        lines.append("")
    lines += [
        "Reproduce: `python bench/sparse_bench.py --n 200000`.",
        "",
    ]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
