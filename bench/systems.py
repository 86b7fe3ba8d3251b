"""One benchmark subject per process: ``python bench/systems.py SYSTEM ARGS``.

Each system runs in its own interpreter so that its memory is measured alone
(RSS growth of that process) and peers whose dependencies clash with ours can
run from another virtual environment. Every system answers the same
questions on the same cached real-text vectors and prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import psutil

EF_SWEEP = (16, 32, 64, 128, 256)
M, EF_CONSTRUCTION = 16, 100


def rss_mb() -> float:
    """RSS of this process plus its children (milvus-lite runs a server child)."""
    gc.collect()
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return float(total) / 2**20


def recall_at_10(found: list[list[int]], truth: np.ndarray) -> float:
    hits = sum(len(set(f[:10]) & set(t[:10].tolist())) for f, t in zip(found, truth, strict=True))
    return hits / (10 * len(found))


def timed_single(search: Callable[[np.ndarray], list[int]], queries: np.ndarray,
                 ) -> tuple[list[list[int]], float, float]:
    for q in queries[:20]:  # warm caches and lazy initialisation
        search(q)
    times, found = [], []
    for q in queries:
        t0 = time.perf_counter()
        ids = search(q)
        times.append(time.perf_counter() - t0)
        found.append(ids)
    arr = np.asarray(times) * 1e3
    return found, float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


class Subject:
    name = ""

    def build(self, base: np.ndarray) -> None: ...
    def set_ef(self, ef: int) -> None: ...
    def search(self, q: np.ndarray) -> list[int]: ...
    def search_batch(self, qs: np.ndarray) -> list[list[int]]: ...
    def close(self) -> None: ...


class Peregrine(Subject):
    name = "peregrine"

    def __init__(self, quantization: str = "none") -> None:
        import peregrine

        self.dir = tempfile.mkdtemp(prefix="pg-bench-")
        self.db = peregrine.open(self.dir)
        self.quantization = quantization
        self.ef = 64

    def build(self, base: np.ndarray) -> None:
        self.col = self.db.create_collection(
            "bench", base.shape[1], "cosine",
            index={"m": M, "ef_construction": EF_CONSTRUCTION, "quantization": self.quantization,
                   "segment_rows": 50_000},
        )
        self.col.create_payload_index("bucket", "integer")
        for start in range(0, base.shape[0], 5000):
            stop = min(base.shape[0], start + 5000)
            self.col.upsert(np.arange(start, stop), base[start:stop],
                            [{"bucket": i % 100} for i in range(start, stop)])
        self.col.optimize()

    def set_ef(self, ef: int) -> None:
        self.ef = ef

    def search(self, q: np.ndarray) -> list[int]:
        return [h.id for h in self.col.search(q, 10, ef=self.ef)]  # type: ignore[misc]

    def search_filtered(self, q: np.ndarray, flt: dict[str, Any]) -> list[int]:
        return [h.id for h in self.col.search(q, 10, ef=self.ef, filter=flt)]  # type: ignore[misc]

    def search_batch(self, qs: np.ndarray) -> list[list[int]]:
        return [[h.id for h in hits] for hits in  # type: ignore[misc]
                self.col.search_batch(qs, 10, ef=self.ef, with_payload=False)]

    def close(self) -> None:
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class RawFaiss(Subject):
    name = "faiss (raw)"

    def build(self, base: np.ndarray) -> None:
        import faiss

        self.faiss = faiss
        self.index = faiss.IndexHNSWFlat(base.shape[1], M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = EF_CONSTRUCTION
        self.index.add(base)
        self.params = faiss.SearchParametersHNSW()

    def set_ef(self, ef: int) -> None:
        self.params.efSearch = ef

    def search(self, q: np.ndarray) -> list[int]:
        _, ids = self.index.search(q[None, :], 10, params=self.params)
        return ids[0].tolist()  # type: ignore[no-any-return]

    def search_batch(self, qs: np.ndarray) -> list[list[int]]:
        _, ids = self.index.search(qs, 10, params=self.params)
        return ids.tolist()  # type: ignore[no-any-return]


class Chroma(Subject):
    name = "chroma"

    def build(self, base: np.ndarray) -> None:
        import chromadb

        self.dir = tempfile.mkdtemp(prefix="chroma-bench-")
        self.client = chromadb.PersistentClient(path=self.dir)
        self.col = self.client.create_collection(
            "bench",
            metadata={"hnsw:space": "cosine", "hnsw:M": M,
                      "hnsw:construction_ef": EF_CONSTRUCTION, "hnsw:search_ef": 64},
        )
        step = 5000
        for start in range(0, base.shape[0], step):
            stop = min(base.shape[0], start + step)
            self.col.add(ids=[str(i) for i in range(start, stop)], embeddings=base[start:stop],
                         metadatas=[{"bucket": i % 100} for i in range(start, stop)])

    def set_ef(self, ef: int) -> None:
        self.col.modify(configuration={"hnsw": {"ef_search": ef}})

    def search(self, q: np.ndarray) -> list[int]:
        res = self.col.query(query_embeddings=q[None, :], n_results=10, include=["metadatas"])
        return [int(i) for i in res["ids"][0]]

    def search_batch(self, qs: np.ndarray) -> list[list[int]]:
        res = self.col.query(query_embeddings=qs, n_results=10, include=[])
        return [[int(i) for i in row] for row in res["ids"]]

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class MilvusLite(Subject):
    name = "milvus-lite"

    def build(self, base: np.ndarray) -> None:
        from pymilvus import DataType, MilvusClient

        self.dir = tempfile.mkdtemp(prefix="milvus-bench-")
        self.client = MilvusClient(os.path.join(self.dir, "bench.db"))
        schema = self.client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=base.shape[1])
        schema.add_field("bucket", DataType.INT64)
        index = self.client.prepare_index_params()
        index.add_index("vector", index_type=os.environ.get("MILVUS_INDEX", "HNSW"),
                        metric_type="COSINE", params={"M": M, "efConstruction": EF_CONSTRUCTION})
        self.client.create_collection("bench", schema=schema, index_params=index)
        step = 5000
        for start in range(0, base.shape[0], step):
            stop = min(base.shape[0], start + step)
            self.client.insert("bench", [
                {"id": i, "vector": base[i].tolist(), "bucket": i % 100}
                for i in range(start, stop)
            ])
        self.client.flush("bench")
        self.client.load_collection("bench")
        self.ef = 64

    def set_ef(self, ef: int) -> None:
        self.ef = ef

    def _params(self) -> dict[str, Any]:
        return {"metric_type": "COSINE", "params": {"ef": self.ef}}

    def search(self, q: np.ndarray) -> list[int]:
        res = self.client.search("bench", data=[q.tolist()], limit=10,
                                 search_params=self._params(), output_fields=["bucket"])
        return [int(h["id"]) for h in res[0]]

    def search_batch(self, qs: np.ndarray) -> list[list[int]]:
        res = self.client.search("bench", data=qs.tolist(), limit=10,
                                 search_params=self._params(), output_fields=[])
        return [[int(h["id"]) for h in row] for row in res]

    def close(self) -> None:
        self.client.close()
        shutil.rmtree(self.dir, ignore_errors=True)


SUBJECTS: dict[str, Callable[[], Subject]] = {
    "peregrine": Peregrine,
    "peregrine-int8": lambda: Peregrine("int8"),
    "faiss": RawFaiss,
    "chroma": Chroma,
    "milvus-lite": MilvusLite,
}


def run(system: str, n: int, n_queries: int, threads: int) -> dict[str, Any]:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from dataset import load_dataset

    data = load_dataset(n, n_queries)
    base = np.ascontiguousarray(data.base, dtype=np.float32)
    queries = np.ascontiguousarray(data.queries, dtype=np.float32)
    truth = np.asarray(data.ground_truth)
    subject = SUBJECTS[system]()
    rss0 = rss_mb()
    t0 = time.perf_counter()
    subject.build(base)
    build_s = time.perf_counter() - t0
    rss_built = rss_mb()
    out: dict[str, Any] = {"system": system, "n": n, "dim": base.shape[1],
                           "build_s": build_s, "sweep": []}
    for ef in EF_SWEEP:
        subject.set_ef(ef)
        set_threads(system, 1)
        found, p50, p99 = timed_single(subject.search, queries)
        set_threads(system, threads)
        t0 = time.perf_counter()
        batch = subject.search_batch(queries)
        qps = len(queries) / (time.perf_counter() - t0)
        out["sweep"].append({
            "ef": ef, "recall": recall_at_10(found, truth), "p50_ms": p50, "p99_ms": p99,
            "batch_qps": qps, "batch_recall": recall_at_10(batch, truth),
        })
    if isinstance(subject, Peregrine):
        set_threads(system, 1)
        out["filtered"] = filtered_recall(subject, base, queries)
    out["rss_mb"] = rss_mb() - rss0
    out["rss_after_build_mb"] = rss_built - rss0
    subject.close()
    return out


def set_threads(system: str, threads: int) -> None:
    """Single queries run on one thread for every subject; batches on ``threads``."""
    if system.startswith("peregrine") or system == "faiss":
        import faiss

        faiss.omp_set_num_threads(threads)


def filtered_recall(subject: Peregrine, base: np.ndarray, queries: np.ndarray
                    ) -> list[dict[str, Any]]:
    """Recall@10 of filtered queries against exact filtered ground truth."""
    buckets = np.arange(base.shape[0]) % 100
    cases = [
        ("1%", {"must": [{"key": "bucket", "match": {"value": 7}}]}, buckets == 7),
        ("50%", {"must": [{"key": "bucket", "range": {"lt": 50}}]}, buckets < 50),
    ]
    results = []
    qs = queries[:300]
    for label, flt, mask in cases:
        rows = np.flatnonzero(mask)
        scores = qs @ base[rows].T
        truth = rows[np.argsort(-scores, axis=1)[:, :10]]
        for ef in (64, 128):
            subject.set_ef(ef)
            found, p50, p99 = timed_single(lambda q, f=flt: subject.search_filtered(q, f), qs)
            results.append({"selectivity": label, "ef": ef, "recall": recall_at_10(found, truth),
                            "p50_ms": p50, "p99_ms": p99})
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("system", choices=sorted(SUBJECTS))
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="threads for batch search (single queries always use 1)")
    args = ap.parse_args()
    print(json.dumps(run(args.system, args.n, args.queries, args.threads)))


if __name__ == "__main__":
    main()
