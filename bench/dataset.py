"""Real-text embedding dataset for benchmarks, built once and cached.

Base and query vectors are all-MiniLM-L6-v2 embeddings (384-d, L2-normalised
float32) of real text found offline on this machine: Python docstrings and
Debian package descriptions (see ``corpus``). Queries are
held-out texts that are not in the base. Exact top-100 neighbours by inner
product (= cosine, the vectors being normalised) are computed with numpy.

Embedding 200k texts takes tens of minutes on two cores, so everything is
cached under ``~/.cache/peregrine-bench/`` (override with
``PEREGRINE_BENCH_CACHE``), one directory per (n_base, n_queries)::

    minilm-b200000-q1000/
        base.npy           float32 (n_base, 384)
        queries.npy        float32 (n_queries, 384)
        gt_ids.npy         int32   (n_queries, 100)   exact neighbours, best first
        gt_scores.npy      float32 (n_queries, 100)   their inner products
        texts.json         {"base": [...], "queries": [...]}
        meta.json          model, versions, corpus sizes, timings

Embeddings are reused across dataset sizes: any text already embedded in
another cached dataset is not embedded again, so a smaller dataset built after
the 200k one costs only its ground truth.

    python bench/dataset.py --n 200000            # build (or load) and report
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
GT_K = 100
EMBED_CHUNK = 8192
FORMAT_VERSION = 1


def cache_root() -> Path:
    """Cache directory; PEREGRINE_BENCH_CACHE overrides the default."""
    env = os.environ.get("PEREGRINE_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "peregrine-bench"


def dataset_dir(n_base: int, n_queries: int) -> Path:
    """Directory holding one cached dataset."""
    return cache_root() / f"minilm-b{n_base}-q{n_queries}"


@dataclass(frozen=True)
class Dataset:
    """A cached benchmark dataset; arrays are memory-mapped read-only."""

    base: npt.NDArray[np.float32]
    queries: npt.NDArray[np.float32]
    ground_truth: npt.NDArray[np.int32]
    ground_truth_scores: npt.NDArray[np.float32]
    base_texts: list[str]
    query_texts: list[str]
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        """Vector dimension (384)."""
        return int(self.base.shape[1])


def _import_embed() -> Any:
    """Import peregrine.embed, falling back to the source tree if not installed."""
    try:
        import peregrine.embed as embed  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        sys.path.insert(0, str(ROOT / "src"))
        import peregrine.embed as embed  # type: ignore[import-untyped,unused-ignore]
    return embed


def exact_topk(
    base: npt.NDArray[np.float32],
    queries: npt.NDArray[np.float32],
    k: int,
    *,
    mask: npt.NDArray[np.bool_] | None = None,
    block: int = 32768,
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """Exact top-k by inner product, best first, scanning ``base`` in blocks.

    Blocks bound the score matrix to (n_queries, block) floats. ``mask``
    restricts candidates (filtered ground truth); rows of the answer have
    fewer than k valid ids only if fewer than k rows pass the mask, and are
    padded with -1 / -inf.
    """
    nq = queries.shape[0]
    best_ids = np.full((nq, k), -1, dtype=np.int64)
    best_scores = np.full((nq, k), -np.inf, dtype=np.float32)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    for start in range(0, base.shape[0], block):
        stop = min(start + block, base.shape[0])
        scores = q @ np.asarray(base[start:stop], dtype=np.float32).T
        if mask is not None:
            scores[:, ~mask[start:stop]] = -np.inf
        kk = min(k, stop - start)
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        part_scores = np.take_along_axis(scores, part, axis=1)
        ids = np.concatenate([best_ids, part + start], axis=1)
        sc = np.concatenate([best_scores, part_scores], axis=1)
        keep = np.argpartition(-sc, k - 1, axis=1)[:, :k]
        best_ids = np.take_along_axis(ids, keep, axis=1)
        best_scores = np.take_along_axis(sc, keep, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    best_ids = np.take_along_axis(best_ids, order, axis=1)
    best_scores = np.take_along_axis(best_scores, order, axis=1)
    best_ids[~np.isfinite(best_scores)] = -1
    return best_ids.astype(np.int32), best_scores


def _known_embeddings(texts: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
    """Vectors for ``texts`` that some other cached dataset already embedded."""
    wanted = set(texts)
    found: dict[str, npt.NDArray[np.float32]] = {}
    root = cache_root()
    if not root.is_dir():
        return found
    for d in sorted(root.glob("minilm-b*-q*")):
        try:
            meta = json.loads((d / "meta.json").read_text())
            if meta.get("format") != FORMAT_VERSION:
                continue
            stored = json.loads((d / "texts.json").read_text())
            for key, arr_name in (("base", "base.npy"), ("queries", "queries.npy")):
                vecs = np.load(d / arr_name, mmap_mode="r")
                for i, text in enumerate(stored[key]):
                    if text in wanted and text not in found:
                        found[text] = np.array(vecs[i], dtype=np.float32)
        except (OSError, ValueError, KeyError):
            continue
    return found


def _embed_all(texts: list[str], work: Path, log: bool) -> tuple[npt.NDArray[np.float32], float]:
    """Embed ``texts`` (reusing cached vectors), checkpointing chunks in ``work``.

    Texts are sorted by length before chunking so that each batch pads to a
    similar token count (2-3x faster than random order on CPU), and each
    finished chunk is saved so an interrupted build resumes where it stopped.
    Returns the vectors in input order and the seconds spent embedding.
    """
    embed = _import_embed()
    out = np.zeros((len(texts), embed.EMBED_DIM), dtype=np.float32)
    known = _known_embeddings(texts)
    todo = [i for i, t in enumerate(texts) if t not in known]
    for i, t in enumerate(texts):
        if t in known:
            out[i] = known[t]
    if log and known:
        print(f"reused {len(known)} cached embeddings, {len(todo)} to embed", flush=True)
    if not todo:
        return out, 0.0
    todo.sort(key=lambda i: (len(texts[i]), i))
    # Checkpoints are only valid for the exact same list of texts to embed.
    digest = hashlib.sha256("\0".join(texts[i] for i in todo).encode()).hexdigest()
    stamp = work / "todo.sha256"
    if work.exists() and (not stamp.exists() or stamp.read_text() != digest):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest)
    embedder = embed.TextEmbedder()
    t0 = time.perf_counter()
    done = 0
    for c, start in enumerate(range(0, len(todo), EMBED_CHUNK)):
        idx = todo[start : start + EMBED_CHUNK]
        chunk_file = work / f"chunk-{c:05d}-{len(idx)}.npy"
        if chunk_file.exists():
            vecs = np.load(chunk_file)
        else:
            vecs = embedder.encode([texts[i] for i in idx], batch_size=128)
            np.save(chunk_file, vecs)
        out[idx] = vecs
        done += len(idx)
        if log:
            el = time.perf_counter() - t0
            print(
                f"  embedded {done}/{len(todo)}  {el:7.1f}s  {done / el:6.1f} texts/s", flush=True
            )
    return out, time.perf_counter() - t0


def build_dataset(n_base: int, n_queries: int = 1000, *, log: bool = True) -> Path:
    """Build the dataset for (n_base, n_queries) into the cache; return its dir."""
    embed = _import_embed()
    final = dataset_dir(n_base, n_queries)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    from corpus import real_text_corpus  # bench/ is on sys.path: scripts run from it

    texts: list[str] = real_text_corpus(n_base + n_queries)
    timings["corpus_s"] = time.perf_counter() - t0
    if log:
        print(f"corpus: {len(texts)} unique texts in {timings['corpus_s']:.1f}s", flush=True)
    work = final.with_name(final.name + ".partial")
    vectors, timings["embed_s"] = _embed_all(texts, work, log)
    base, queries = vectors[:n_base], vectors[n_base:]
    t0 = time.perf_counter()
    gt_ids, gt_scores = exact_topk(base, queries, min(GT_K, n_base))
    timings["ground_truth_s"] = time.perf_counter() - t0
    n_embedded = sum(int(p.name.split("-")[2].split(".")[0]) for p in work.glob("chunk-*.npy"))
    meta: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "model": embed.MODEL_NAME,
        "dim": int(vectors.shape[1]),
        "n_base": n_base,
        "n_queries": n_queries,
        "gt_k": int(gt_ids.shape[1]),
        "metric": "inner_product (cosine on L2-normalised vectors)",
        "sources": "python docstrings (stdlib+site-packages, ast) + debian descriptions",
        "texts_embedded_now": n_embedded,
        "embed_texts_per_s": n_embedded / timings["embed_s"] if timings["embed_s"] else None,
        "timings": timings,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, {platform.platform()}",
        "python": platform.python_version(),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "base.npy", np.ascontiguousarray(base))
    np.save(tmp / "queries.npy", np.ascontiguousarray(queries))
    np.save(tmp / "gt_ids.npy", gt_ids)
    np.save(tmp / "gt_scores.npy", gt_scores)
    (tmp / "texts.json").write_text(
        json.dumps({"base": texts[:n_base], "queries": texts[n_base:]}, ensure_ascii=False)
    )
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    shutil.rmtree(work, ignore_errors=True)
    return final


def load_dataset(n_base: int, n_queries: int = 1000, *, build: bool = True) -> Dataset:
    """Load the cached dataset, building it first if missing and ``build``."""
    d = dataset_dir(n_base, n_queries)
    if not (d / "meta.json").exists():
        if not build:
            raise FileNotFoundError(f"no cached dataset at {d}; run bench/dataset.py --n {n_base}")
        build_dataset(n_base, n_queries)
    meta = json.loads((d / "meta.json").read_text())
    texts = json.loads((d / "texts.json").read_text())
    return Dataset(
        base=np.load(d / "base.npy", mmap_mode="r"),
        queries=np.load(d / "queries.npy", mmap_mode="r"),
        ground_truth=np.load(d / "gt_ids.npy"),
        ground_truth_scores=np.load(d / "gt_scores.npy"),
        base_texts=texts["base"],
        query_texts=texts["queries"],
        path=d,
        meta=meta,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: build (if needed) and describe one dataset."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000, help="base vectors")
    ap.add_argument("--queries", type=int, default=1000, help="held-out query vectors")
    ap.add_argument("--rebuild", action="store_true", help="discard the cached copy first")
    args = ap.parse_args(argv)
    if args.rebuild:
        shutil.rmtree(dataset_dir(args.n, args.queries), ignore_errors=True)
    t0 = time.perf_counter()
    ds = load_dataset(args.n, args.queries)
    total = time.perf_counter() - t0
    t = ds.meta["timings"]
    print(f"dataset: {ds.path}")
    print(f"  base {ds.base.shape} {ds.base.dtype}, queries {ds.queries.shape}")
    print(f"  ground truth ids {ds.ground_truth.shape} {ds.ground_truth.dtype}")
    print(
        f"  built: corpus {t['corpus_s']:.1f}s, embed {t['embed_s']:.1f}s "
        f"({ds.meta['texts_embedded_now']} texts, "
        f"{ds.meta['embed_texts_per_s'] or 0:.1f} texts/s), "
        f"ground truth {t['ground_truth_s']:.1f}s"
    )
    print(f"  this call: {total:.1f}s")
    norms = np.linalg.norm(ds.base[:1000], axis=1)
    print(f"  norms of first 1000 base rows: {norms.min():.4f}..{norms.max():.4f}")
    print(
        f"  mean top-1 / top-10 / top-100 score: {ds.ground_truth_scores[:, 0].mean():.3f} / "
        f"{ds.ground_truth_scores[:, 9].mean():.3f} / {ds.ground_truth_scores[:, -1].mean():.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
