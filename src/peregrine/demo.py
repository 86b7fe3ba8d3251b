"""The README's main job at this stage: real text in, searches out, latency printed.

It embeds docstrings of the Python installation (real English text that every
machine has, no download) with all-MiniLM-L6-v2, stores them in a collection,
and runs a few natural-language searches, timing each layer separately so the
numbers say where time goes.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

import peregrine

QUERIES = (
    "parse a date string into a datetime",
    "compress data with gzip",
    "open a TCP socket connection",
    "compute the standard deviation of numbers",
    "read a CSV file",
)


def run_demo(data_dir: Path, n_texts: int = 5000, out: object = print) -> None:
    from peregrine.embed.corpus import python_docstrings
    from peregrine.embed.embedder import TextEmbedder

    say = out if callable(out) else print
    t0 = time.perf_counter()
    texts = python_docstrings(limit=n_texts)
    say(f"corpus: {len(texts)} docstrings from this Python installation "
        f"({time.perf_counter() - t0:.1f} s)")
    embedder = TextEmbedder()
    t0 = time.perf_counter()
    vectors = embedder.encode(texts, batch_size=64)
    say(f"embedded with all-MiniLM-L6-v2 in {time.perf_counter() - t0:.1f} s "
        f"({len(texts) / (time.perf_counter() - t0):.0f} texts/s)")

    with peregrine.open(data_dir) as db:
        if db.has_collection("docs"):
            db.drop_collection("docs")
        docs = db.create_collection("docs", dim=embedder.dim, metric="cosine")
        docs.create_payload_index("length", "integer")
        t0 = time.perf_counter()
        for start in range(0, len(texts), 1000):
            stop = min(len(texts), start + 1000)
            docs.upsert(
                np.arange(start, stop),
                vectors[start:stop],
                [{"text": t, "length": len(t)} for t in texts[start:stop]],
            )
        upsert_s = time.perf_counter() - t0
        say(f"upserted {len(texts)} points in {upsert_s * 1000:.0f} ms "
            f"({len(texts) / upsert_s:,.0f} points/s), searchable immediately")
        hits = docs.search(embedder.encode([QUERIES[0]])[0], k=1)
        say(f"read-your-writes: top hit before indexing: {hits[0].payload['text'][:70]!r}"
            if hits and hits[0].payload else "read-your-writes: no hit")
        t0 = time.perf_counter()
        docs.optimize()
        say(f"optimize (HNSW build of {len(texts)} vectors): {time.perf_counter() - t0:.1f} s")

        query_vectors = embedder.encode(list(QUERIES))
        for query, qv in zip(QUERIES, query_vectors, strict=True):
            t0 = time.perf_counter()
            hits = docs.search(qv, k=3)
            took = (time.perf_counter() - t0) * 1e6
            say(f"\nquery: {query!r}  ({took:.0f} µs)")
            for hit in hits:
                text = (hit.payload or {}).get("text", "")
                say(f"  {hit.score:.3f}  #{hit.id}  {text[:90]!r}")

        filt = {"must": [{"key": "length", "range": {"lt": 80}}]}
        say(f"\nfiltered (text shorter than 80 chars): "
            f"{docs.count(filt)} of {docs.count()} points match")
        hits = docs.search(query_vectors[1], k=2, filter=filt)
        for hit in hits:
            say(f"  {hit.score:.3f}  #{hit.id}  {(hit.payload or {}).get('text', '')!r}")

        timings = []
        for _ in range(5):
            for qv in query_vectors:
                t0 = time.perf_counter()
                docs.search(qv, k=10)
                timings.append((time.perf_counter() - t0) * 1e6)
        timings.sort()
        say(f"\nsearch latency over {len(timings)} queries (k=10, with payloads): "
            f"p50 {statistics.median(timings):.0f} µs, "
            f"p99 {timings[int(len(timings) * 0.99) - 1]:.0f} µs")
        say(f"data kept in {data_dir.resolve()}")
