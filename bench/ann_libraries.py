"""Compare HNSW libraries on the cached real-text dataset (bench/dataset.py).

Candidates: FAISS IndexHNSWFlat and IndexHNSWSQ (8-bit), usearch (f32, i8)
and hnswlib, all with M=16 and ef_construction=100 on inner product over
L2-normalised all-MiniLM-L6-v2 vectors. For each we measure build time (all
cores), memory (RSS growth of a fresh process and serialised size), and at
several ef values recall@10 against exact ground truth, single-query p50/p99
latency (1 thread, one query per call, as a server would issue them) and
batch QPS (all queries in one call, all cores).

Filtered search is measured where the library can do it: FAISS evaluates an
IDSelectorBitmap in C++ inside the graph walk; hnswlib calls a Python
function per visited node; usearch's Python API has no filter at all. An
exact scan of the pre-gathered allowed rows is included as the baseline any
planner would fall back to at low selectivity.

Each library runs in its own subprocess so RSS deltas are not polluted by
the allocator state of the previous one.

    .venv/bin/python bench/ann_libraries.py --n 200000
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
M = 16
EF_CONSTRUCTION = 100
EF_SWEEP = (16, 32, 64, 128, 256)
FILTER_EF = (16, 64, 256, 1024)
K = 10
LIBS = ("faiss-hnsw-flat", "faiss-hnsw-sq8", "usearch-f32", "usearch-i8", "hnswlib")
Vec = npt.NDArray[np.float32]


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc, no psutil)."""
    gc.collect()
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def recall(found: npt.NDArray[np.int64], truth: npt.NDArray[np.integer[Any]]) -> float:
    """Mean |found ∩ truth| / K over queries; -1 entries in truth never match."""
    hits = 0
    total = 0
    for f, t in zip(found, truth, strict=True):
        valid = t[t >= 0][:K]
        hits += len(set(f[:K].tolist()) & set(valid.tolist()))
        total += len(valid)
    return hits / max(total, 1)


def timed_single(search: Callable[[Vec], npt.NDArray[np.int64]], queries: Vec) -> dict[str, Any]:
    """Run queries one at a time; return ids and p50/p99/mean latency in ms."""
    for q in queries[:20]:  # warm-up: caches, lazy init
        search(q)
    lat = np.empty(len(queries))
    out = np.full((len(queries), K), -1, dtype=np.int64)
    for i, q in enumerate(queries):
        t0 = time.perf_counter_ns()
        ids = search(q)
        lat[i] = time.perf_counter_ns() - t0
        out[i, : len(ids)] = ids[:K]
    lat /= 1e6
    return {
        "ids": out,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "mean_ms": float(lat.mean()),
    }


class Lib:
    """Uniform wrapper over one library's index."""

    name = ""
    native_filter = "no"

    def build(self, base: Vec, threads: int) -> None:
        raise NotImplementedError

    def set_ef(self, ef: int) -> None:
        raise NotImplementedError

    def search_one(self, q: Vec) -> npt.NDArray[np.int64]:
        raise NotImplementedError

    def search_batch(self, qs: Vec, threads: int) -> npt.NDArray[np.int64]:
        raise NotImplementedError

    def serialized_bytes(self) -> int:
        raise NotImplementedError


class Faiss(Lib):
    native_filter = "yes: IDSelector (bitmap/batch/range) in C++ via SearchParametersHNSW(sel=)"

    def __init__(self, sq8: bool) -> None:
        import faiss

        self.faiss = faiss
        self.sq8 = sq8
        self.name = "faiss-hnsw-sq8" if sq8 else "faiss-hnsw-flat"
        self.ef = 16

    def build(self, base: Vec, threads: int) -> None:
        f = self.faiss
        f.omp_set_num_threads(threads)
        d = base.shape[1]
        if self.sq8:
            self.index = f.IndexHNSWSQ(d, f.ScalarQuantizer.QT_8bit, M, f.METRIC_INNER_PRODUCT)
            self.index.train(base)
        else:
            self.index = f.IndexHNSWFlat(d, M, f.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = EF_CONSTRUCTION
        self.index.add(base)
        f.omp_set_num_threads(1)  # single-query measurements run on one thread

    def set_ef(self, ef: int) -> None:
        self.ef = ef
        self.index.hnsw.efSearch = ef

    def search_one(self, q: Vec) -> npt.NDArray[np.int64]:
        _, ids = self.index.search(q.reshape(1, -1), K)
        return ids[0]  # type: ignore[no-any-return]

    def search_batch(self, qs: Vec, threads: int) -> npt.NDArray[np.int64]:
        self.faiss.omp_set_num_threads(threads)
        _, ids = self.index.search(qs, K)
        self.faiss.omp_set_num_threads(1)
        return ids  # type: ignore[no-any-return]

    def serialized_bytes(self) -> int:
        return int(self.faiss.serialize_index(self.index).nbytes)

    def filtered(self, mask: npt.NDArray[np.bool_]) -> Callable[[Vec], npt.NDArray[np.int64]]:
        """Search closure with a C++ bitmap selector (bit i = id i allowed)."""
        f = self.faiss
        bits = np.packbits(mask, bitorder="little")
        sel = f.IDSelectorBitmap(len(mask), f.swig_ptr(bits))
        params = f.SearchParametersHNSW(sel=sel, efSearch=self.ef)

        def search(q: Vec) -> npt.NDArray[np.int64]:
            _, ids = self.index.search(q.reshape(1, -1), K, params=params)
            return ids[0]  # type: ignore[no-any-return]

        search.keepalive = (bits, sel, params)  # type: ignore[attr-defined]
        return search


class USearch(Lib):
    native_filter = (
        "no in Python (C++ core has predicate search; Python binding does not expose it)"
    )

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype
        self.name = f"usearch-{dtype}"

    def build(self, base: Vec, threads: int) -> None:
        from usearch.index import Index

        # i8 quantises each component to round(x*127); that assumes unit-norm
        # input, which ours is. "ip" is the right metric for both then.
        self.index = Index(
            ndim=base.shape[1],
            metric="ip",
            dtype=self.dtype,
            connectivity=M,
            expansion_add=EF_CONSTRUCTION,
        )
        self.index.add(np.arange(base.shape[0], dtype=np.uint64), base, threads=threads)

    def set_ef(self, ef: int) -> None:
        self.index.expansion_search = ef

    def search_one(self, q: Vec) -> npt.NDArray[np.int64]:
        return self.index.search(q, K, threads=1).keys.astype(np.int64)  # type: ignore[no-any-return]

    def search_batch(self, qs: Vec, threads: int) -> npt.NDArray[np.int64]:
        return self.index.search(qs, K, threads=threads).keys.astype(np.int64)  # type: ignore[no-any-return]

    def serialized_bytes(self) -> int:
        return int(self.index.serialized_length)


class HnswLib(Lib):
    name = "hnswlib"
    native_filter = (
        "Python callback only: filter=fn(label)->bool, called per visited node under the GIL"
    )

    def build(self, base: Vec, threads: int) -> None:
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=base.shape[1])
        self.index.init_index(max_elements=base.shape[0], ef_construction=EF_CONSTRUCTION, M=M)
        self.index.add_items(base, np.arange(base.shape[0]), num_threads=threads)

    def set_ef(self, ef: int) -> None:
        self.index.set_ef(ef)

    def search_one(self, q: Vec) -> npt.NDArray[np.int64]:
        labels, _ = self.index.knn_query(q, k=K, num_threads=1)
        return labels[0].astype(np.int64)  # type: ignore[no-any-return]

    def search_batch(self, qs: Vec, threads: int) -> npt.NDArray[np.int64]:
        labels, _ = self.index.knn_query(qs, k=K, num_threads=threads)
        return labels.astype(np.int64)  # type: ignore[no-any-return]

    def serialized_bytes(self) -> int:
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "h.bin")
            self.index.save_index(p)
            return os.path.getsize(p)

    def filtered(self, mask: npt.NDArray[np.bool_]) -> Callable[[Vec], npt.NDArray[np.int64]]:
        allowed = mask.tolist()  # list indexing is the cheapest Python predicate

        def search(q: Vec) -> npt.NDArray[np.int64]:
            labels, _ = self.index.knn_query(q, k=K, num_threads=1, filter=lambda i: allowed[i])
            return labels[0].astype(np.int64)  # type: ignore[no-any-return]

        return search


def make(name: str) -> Lib:
    """Instantiate a library wrapper by its short name."""
    if name.startswith("faiss"):
        return Faiss(sq8=name.endswith("sq8"))
    if name.startswith("usearch"):
        return USearch(name.split("-")[1])
    if name == "hnswlib":
        return HnswLib()
    raise ValueError(name)


def filter_masks(n: int) -> dict[str, npt.NDArray[np.bool_]]:
    """Random (id-uncorrelated) allow-masks at 50% and 1% selectivity."""
    rng = np.random.default_rng(42)
    u = rng.random(n)
    return {"50%": u < 0.5, "1%": u < 0.01}


def worker(name: str, n: int, n_queries: int, lat_queries: int, threads: int) -> dict[str, Any]:
    """Benchmark one library in this process; return a JSON-able dict."""
    sys.path.insert(0, str(HERE))
    from dataset import load_dataset

    ds = load_dataset(n, n_queries, build=False)
    base = np.ascontiguousarray(ds.base, dtype=np.float32)
    queries = np.ascontiguousarray(ds.queries, dtype=np.float32)
    truth = ds.ground_truth.astype(np.int64)
    lat_q = queries[:lat_queries]
    lib = make(name)
    out: dict[str, Any] = {
        "library": name,
        "n": n,
        "dim": int(base.shape[1]),
        "native_filter": lib.native_filter,
    }
    rss0 = rss_mb()
    t0 = time.perf_counter()
    lib.build(base, threads)
    out["build_s"] = time.perf_counter() - t0
    out["rss_delta_mb"] = rss_mb() - rss0
    out["serialized_mb"] = lib.serialized_bytes() / 2**20
    out["sweep"] = []
    for ef in EF_SWEEP:
        lib.set_ef(ef)
        single = timed_single(lib.search_one, lat_q)
        t0 = time.perf_counter()
        batch = lib.search_batch(queries, threads)
        qps = len(queries) / (time.perf_counter() - t0)
        out["sweep"].append(
            {
                "ef": ef,
                "recall": recall(single["ids"], truth[: len(lat_q)]),
                "p50_ms": single["p50_ms"],
                "p99_ms": single["p99_ms"],
                "batch_qps": qps,
                "batch_recall": recall(batch, truth),
            }
        )
        print(f"[{name}] ef={ef} {out['sweep'][-1]}", file=sys.stderr, flush=True)
    if isinstance(lib, Faiss | HnswLib):
        out["filtered"] = filtered_runs(lib, base, queries[:300], threads)
    return out


def filtered_runs(lib: Faiss | HnswLib, base: Vec, qs: Vec, threads: int) -> list[dict[str, Any]]:
    """Recall@10 and latency of filtered single queries vs exact filtered truth."""
    sys.path.insert(0, str(HERE))
    from dataset import exact_topk

    res: list[dict[str, Any]] = []
    for label, mask in filter_masks(base.shape[0]).items():
        truth, _ = exact_topk(base, qs, K, mask=mask)
        truth = truth.astype(np.int64)
        if isinstance(lib, Faiss):
            rows = np.flatnonzero(mask)
            sub = np.ascontiguousarray(base[rows])

            def brute(
                q: Vec, sub: Vec = sub, rows: npt.NDArray[np.int64] = rows
            ) -> npt.NDArray[np.int64]:
                s = sub @ q
                top = np.argpartition(-s, K)[:K]
                return rows[top[np.argsort(-s[top])]]

            r = timed_single(brute, qs)
            res.append(
                {
                    "selectivity": label,
                    "method": "numpy exact scan of allowed rows",
                    "ef": None,
                    "recall": recall(r["ids"], truth),
                    "p50_ms": r["p50_ms"],
                    "p99_ms": r["p99_ms"],
                }
            )
        efs = FILTER_EF if isinstance(lib, Faiss) else (16, 64, 256)
        for ef in efs:
            lib.set_ef(ef)
            r = timed_single(lib.filtered(mask), qs)
            method = (
                "IDSelectorBitmap (C++)" if isinstance(lib, Faiss) else "filter= Python callback"
            )
            res.append(
                {
                    "selectivity": label,
                    "method": method,
                    "ef": ef,
                    "recall": recall(r["ids"], truth),
                    "p50_ms": r["p50_ms"],
                    "p99_ms": r["p99_ms"],
                }
            )
            print(f"[{lib.name}] filtered {res[-1]}", file=sys.stderr, flush=True)
    del threads
    return res


def machine() -> str:
    """One-line description of the CPU this ran on."""
    model = platform.processor() or "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    system = f"{platform.system()} {platform.release()}"
    return f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {system}"


def versions() -> dict[str, str]:
    """Versions of the libraries under test."""
    import faiss
    import hnswlib
    import usearch

    return {
        "faiss": faiss.__version__,
        "usearch": usearch.__version__,
        "hnswlib": getattr(hnswlib, "__version__", "0.8.0"),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def write_markdown(results: dict[str, Any], path: Path) -> None:
    """Render the comparison as markdown tables."""
    L: list[str] = [
        "# ANN library comparison (real-text embeddings)",
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {results['machine']}  ",
        f"Date: {results['date']}; load average at start/end: "
        f"{results['loadavg_start']} / {results['loadavg_end']} "
        "(the machine is shared; other processes inflate timings)  ",
        f"Versions: {', '.join(f'{k} {v}' for k, v in results['versions'].items())}",
        "",
        f"Dataset: {results['n']} base / {results['n_queries']} held-out query vectors, "
        "all-MiniLM-L6-v2 (384-d, normalised), texts = Python docstrings + Debian package "
        "descriptions; exact top-100 ground truth by inner product.  ",
        f"Index: HNSW M={M}, ef_construction={EF_CONSTRUCTION}, inner product. "
        f"Build on {results['threads']} threads. Single-query latency: "
        f"{results['lat_queries']} queries, one per call, 1 thread. Batch QPS: all "
        f"{results['n_queries']} queries in one call, {results['threads']} threads. "
        "Memory: RSS growth of a fresh process during build; serialised = index file size "
        f"(raw float32 vectors alone are {results['n'] * 384 * 4 / 2**20:.0f} MiB).",
        "",
        "## Build and memory",
        "",
        "| library | build s | RSS delta MiB | serialised MiB | filtering |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for r in results["libraries"]:
        if "error" in r:
            L.append(f"| {r['library']} | error: {r['error']} | | | |")
            continue
        L.append(
            f"| {r['library']} | {r['build_s']:.1f} | {r['rss_delta_mb']:.0f} | "
            f"{r['serialized_mb']:.0f} | {r['native_filter']} |"
        )
    L += [
        "",
        "## Recall@10 and latency by ef",
        "",
        "| library | ef | recall@10 | p50 ms | p99 ms | batch QPS |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results["libraries"]:
        for s in r.get("sweep", []):
            L.append(
                f"| {r['library']} | {s['ef']} | {s['recall']:.3f} | {s['p50_ms']:.3f} | "
                f"{s['p99_ms']:.3f} | {s['batch_qps']:.0f} |"
            )
    L += [
        "",
        "## Filtered search (300 queries, 1 thread, random allow-mask)",
        "",
        "| library | selectivity | method | ef | recall@10 | p50 ms | p99 ms |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results["libraries"]:
        for f in r.get("filtered", []):
            ef = "-" if f["ef"] is None else str(f["ef"])
            L.append(
                f"| {r['library']} | {f['selectivity']} | {f['method']} | {ef} | "
                f"{f['recall']:.3f} | {f['p50_ms']:.3f} | {f['p99_ms']:.3f} |"
            )
    L += ["", "usearch's Python API has no filtered search, so it has no rows here.", ""]
    path.write_text("\n".join(L))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--lat-queries", type=int, default=1000, help="queries timed one by one")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--libs", default=",".join(LIBS))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.worker:
        res = worker(args.worker, args.n, args.queries, args.lat_queries, args.threads)
        print(json.dumps(res))
        return 0

    sys.path.insert(0, str(HERE))
    from dataset import load_dataset

    load_dataset(args.n, args.queries)  # build up front if missing
    results: dict[str, Any] = {
        "command": "python bench/ann_libraries.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "n": args.n,
        "n_queries": args.queries,
        "lat_queries": args.lat_queries,
        "threads": args.threads,
        "M": M,
        "ef_construction": EF_CONSTRUCTION,
        "libraries": [],
    }
    for name in args.libs.split(","):
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            name,
            "--n",
            str(args.n),
            "--queries",
            str(args.queries),
            "--lat-queries",
            str(args.lat_queries),
            "--threads",
            str(args.threads),
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
        if proc.returncode != 0 or not proc.stdout.strip():
            results["libraries"].append({"library": name, "error": f"exit {proc.returncode}"})
        else:
            results["libraries"].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"{name}: done in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    results["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ann_libraries.json").write_text(json.dumps(results, indent=2))
    write_markdown(results, args.out / "ann_libraries.md")
    print((args.out / "ann_libraries.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
