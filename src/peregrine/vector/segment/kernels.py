"""Exact scoring and top-k selection shared by every segment kind.

Scores are always "higher is better" inside the engine (l2 uses the negated
squared distance) so that results from different segments merge with one
``argpartition``; the public score is converted back only for the final hits.
"""

from __future__ import annotations

from typing import Any

import faiss as _faiss
import numpy as np
import numpy.typing as npt
import orjson

from peregrine.vector.types import Metric

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

NEG_INF = np.float32(-np.inf)
_L1_BLOCK = 8192  # rows per numpy L1 pass: bounds the (rows, dim) temporary

faiss: Any = _faiss


def faiss_metric(metric: Metric) -> int:
    """The FAISS metric that scores like ``metric`` (cosine rows are normalised)."""
    if metric is Metric.L1:
        return int(faiss.METRIC_L1)
    return int(faiss.METRIC_L2 if metric is Metric.L2 else faiss.METRIC_INNER_PRODUCT)


def score_block(vectors: F32, queries: F32, metric: Metric, norms: F32 | None = None) -> F32:
    """(nq, n) internal scores of ``queries`` against ``vectors``."""
    if metric is Metric.L1:
        return _neg_l1(vectors, queries)
    dots = queries @ vectors.T
    if metric is Metric.L2:
        sq_norms = norms if norms is not None else np.einsum("ij,ij->i", vectors, vectors)
        q_norms = np.einsum("ij,ij->i", queries, queries)
        # -(|x|^2 - 2 x.q + |q|^2): negated squared distance, higher is better
        return np.asarray(2.0 * dots - sq_norms[None, :] - q_norms[:, None], dtype=np.float32)
    return np.asarray(dots, dtype=np.float32)


def subset_top_k(vectors: F32, queries: F32, rows: I64, k: int, metric: Metric) -> tuple[F32, I64]:
    """Top-k (best first) of ``queries`` among the listed rows of ``vectors``.

    FAISS scores the rows in place: a numpy gather would copy every listed row
    first (3 MB for 2,000 rows of 384-d), which made selective filters cost
    twice the memory traffic of the scoring itself. Rows past the number
    listed come back as -1 and are trimmed.
    """
    nq, dim = queries.shape
    k_eff = min(k, rows.size)
    if k_eff == 0:
        return np.empty((nq, 0), np.float32), np.empty((nq, 0), np.int64)
    if metric is Metric.L1:  # FAISS has no L1 kernel by index: numpy, in row blocks
        best_s = np.full((nq, 0), NEG_INF, np.float32)
        best_i = np.empty((nq, 0), np.int64)
        for start in range(0, rows.size, _L1_BLOCK):
            block = rows[start:start + _L1_BLOCK]
            s, i = top_k(_neg_l1(vectors[block], queries), k_eff)
            best_s = np.concatenate([best_s, s], axis=1)
            best_i = np.concatenate([best_i, block[i]], axis=1)
            s, pos = top_k(best_s, k_eff)
            best_s, best_i = s, np.take_along_axis(best_i, pos, axis=1)
        return best_s, best_i
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    scores = np.empty((nq, k_eff), np.float32)
    idx = np.empty((nq, k_eff), np.int64)
    search = faiss.knn_L2sqr_by_idx if metric is Metric.L2 else faiss.knn_inner_products_by_idx
    # ld_ids = 0: every query reads the same list of rows.
    search(faiss.swig_ptr(queries), faiss.swig_ptr(vectors), faiss.swig_ptr(rows), dim, nq,
           vectors.shape[0], rows.size, k_eff, faiss.swig_ptr(scores), faiss.swig_ptr(idx), 0)
    if metric is Metric.L2:
        np.negative(scores, out=scores)
    return scores, idx


def full_top_k(vectors: F32, queries: F32, k: int, metric: Metric) -> tuple[F32, I64]:
    """Top-k (best first) of ``queries`` over every row.

    The same single-threaded FAISS loop as ``subset_top_k``: on two busy cores
    ``faiss.knn``'s OpenMP threads and a BLAS product both measured 4-15x
    slower for one query (20k x 384: 1.5 ms here against 6-21 ms).
    """
    return subset_top_k(vectors, queries, np.arange(vectors.shape[0], dtype=np.int64), k,
                        metric)


def top_k(scores: F32, k: int) -> tuple[F32, I64]:
    """Row-wise top-k (best first) of a (nq, n) score matrix; -inf marks excluded."""
    nq, n = scores.shape
    k_eff = min(k, n)
    if k_eff == 0:
        return np.empty((nq, 0), np.float32), np.empty((nq, 0), np.int64)
    if k_eff < n:
        part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
    else:
        part = np.broadcast_to(np.arange(n), (nq, n)).copy()
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64)
    return np.take_along_axis(part_scores, order, axis=1), idx


def public_scores(internal: F32, metric: Metric) -> F32:
    """Engine scores to the user's, still float32: l2 becomes the euclidean distance,
    l1 the Manhattan distance."""
    if metric is Metric.L2:
        return np.sqrt(np.maximum(np.float32(0.0), -internal)).astype(np.float32)
    if metric is Metric.L1:
        return np.negative(internal).astype(np.float32)
    return internal


def _neg_l1(vectors: F32, queries: F32) -> F32:
    """(nq, n) negated Manhattan distances, one query at a time (each a (n, dim)
    temporary: callers pass blocks of rows)."""
    out = np.empty((queries.shape[0], vectors.shape[0]), np.float32)
    for qi in range(queries.shape[0]):
        out[qi] = -np.abs(vectors - queries[qi]).sum(axis=1)
    return out


def shortest_floats(values: F32) -> list[Any]:
    """float32 values as Python floats that print like the float32 did (0.15, not
    0.15000000596046448), nested like the array: what Qdrant's JSON shows.

    orjson formats float32 arrays with the shortest digits that round-trip in
    float32 (ryu) and parses them back, in C: ~1 us for a top-10's scores.
    """
    array = np.ascontiguousarray(values, dtype=np.float32)
    return orjson.loads(orjson.dumps(array, option=orjson.OPT_SERIALIZE_NUMPY))  # type: ignore[no-any-return]


def normalize_rows(vectors: F32) -> F32:
    """Unit-length rows for cosine; zero vectors stay zero (score 0 with anything)."""
    wide = vectors.astype(np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", wide, wide))[:, None]
    norms[norms == 0] = 1.0
    return np.asarray(wide / norms, dtype=np.float32)
