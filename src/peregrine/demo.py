"""The README's main job at this stage: real text in, searches out, latency printed.

It embeds docstrings of the Python installation (real English text that every
machine has, no download) with all-MiniLM-L6-v2, stores them in a collection,
and runs a few natural-language searches, timing each layer separately so the
numbers say where time goes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import peregrine

if TYPE_CHECKING:
    from peregrine.bootstrap import Peregrine, Settings
    from peregrine.vector.service import VectorService

QUERIES = (
    "parse a date string into a datetime",
    "compress data with gzip",
    "open a TCP socket connection",
    "compute the standard deviation of numbers",
    "read a CSV file",
)


def run_demo(data_dir: Path, n_texts: int = 5000, out: object = print) -> None:
    from peregrine.demo_corpus import python_docstrings
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


DEMO_COLLECTION = "docs"


def load_demo_collection(service: VectorService, n_texts: int = 2000,
                         say: Callable[[str], None] = print) -> int:
    """Embed real text into collection ``docs`` unless it is already there.

    Used by ``peregrine serve --demo`` so that a fresh server has something real
    to search. Returns the number of points in the collection.
    """
    from peregrine.demo_corpus import python_docstrings
    from peregrine.embed.embedder import TextEmbedder

    if service.has_collection(DEMO_COLLECTION):
        points = service.count(DEMO_COLLECTION)
        if points:
            say(f"demo collection {DEMO_COLLECTION!r} already holds {points} points")
            return points
        service.drop_collection(DEMO_COLLECTION)
    texts = python_docstrings(limit=n_texts)
    say(f"demo: embedding {len(texts)} docstrings of this Python installation "
        "with all-MiniLM-L6-v2 ...")
    t0 = time.perf_counter()
    embedder = TextEmbedder()
    vectors = embedder.encode(texts, batch_size=64)
    service.create_collection(DEMO_COLLECTION, embedder.dim, "cosine")
    for start in range(0, len(texts), 500):
        stop = min(len(texts), start + 500)
        payloads = [{"text": t, "length": len(t)} for t in texts[start:stop]]
        service.upsert(DEMO_COLLECTION, list(range(start, stop)), vectors[start:stop], payloads)
    say(f"demo: {len(texts)} points in collection {DEMO_COLLECTION!r} "
        f"({time.perf_counter() - t0:.0f} s)")
    return len(texts)


def start_served_demo(process: Peregrine, n_texts: int) -> None:
    """Run ``run_served_demo`` beside the server that ``process`` is about to serve."""
    import threading

    threading.Thread(target=run_served_demo, args=(process.faces.vector, process.settings,
                                                   n_texts), daemon=True,
                     name="demo-loader").start()


def run_served_demo(service: VectorService, settings: Settings, n_texts: int,
                    say: Callable[[str], None] = print) -> None:
    """``peregrine serve --demo``: wait for the server, load ``docs``, query it over HTTP."""
    import json
    import urllib.request

    http = settings.http
    scheme = "https" if http.tls_cert else "http"
    host = "127.0.0.1" if http.host in ("0.0.0.0", "::", "") else http.host
    url = f"{scheme}://{host}:{http.port}"
    headers = {"content-type": "application/json"}
    if http.api_key:
        headers["api-key"] = http.api_key

    def request(path: str, body: dict[str, object] | None = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url + path, data=data, headers=headers,
                                     method="GET" if body is None else "POST")
        with urllib.request.urlopen(req, timeout=30) as response:
            return json.loads(response.read())

    for _ in range(600):  # the server opens the store before it listens
        try:
            urllib.request.urlopen(url + "/readyz", timeout=5).close()
        except Exception:
            time.sleep(0.1)
            continue
        break
    else:
        say("demo: the server did not come up")
        return
    load_demo_collection(service, n_texts, say)
    body = {"query": 42, "limit": 3, "with_payload": ["text"]}
    say(f"\nPeregrine serves the Qdrant REST API at {url}  (data: {settings.data}, "
        f"API document: {url}/openapi.json)")
    say("example query - the 3 docstrings nearest to point 42:")
    key = f"-H 'api-key: {http.api_key}' " if http.api_key else ""
    say(f"  curl -s -X POST {url}/collections/{DEMO_COLLECTION}/points/query "
        f"-H 'content-type: application/json' {key}-d '{json.dumps(body)}'")
    if scheme == "https":
        return
    try:
        answer = request(f"/collections/{DEMO_COLLECTION}/points/query", body)
    except Exception as exc:
        say(f"example query failed: {exc}")
        return
    assert isinstance(answer, dict)
    for point in answer["result"]["points"]:
        text = str(point.get("payload", {}).get("text", ""))
        say(f"  {point['score']:.3f}  #{point['id']}  {text[:80]!r}")
    say("(qdrant-client works unchanged: QdrantClient(url=...). Ctrl-C stops the server.)")
