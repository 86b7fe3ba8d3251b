"""The distance matrix of a sample (Qdrant's ``search/matrix``): for each of
``sample`` random points that a filter selects, its ``limit`` nearest among the
sample, as a sparse matrix. Used to cluster or map a collection.

Exact: blocks of 256 sample rows are scored against the whole sample, the
diagonal masked out, then a row-wise top-k; memory stays at one block, and a
request past its deadline stops between blocks. ``MAX_SAMPLE`` bounds the work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from peregrine.core.deadline import check_deadline
from peregrine.vector.ids import PointId
from peregrine.vector.segment.kernels import NEG_INF, public_scores, score_block, top_k
from peregrine.vector.types import Metric


@dataclass(frozen=True, slots=True)
class DistanceMatrix:
    """Row ``i`` of the sample (``ids[i]``) has neighbours ``cols[i]`` (positions
    in ``ids``) with ``scores[i]``, best first; an offsets (CSR) view of it."""

    ids: list[PointId]
    rows: list[int]
    cols: list[int]
    scores: list[float]


MAX_SAMPLE = 4096
_BLOCK = 256


def nearest_within(ids: list[PointId], vectors: np.ndarray, metric: Metric,
                   limit: int) -> DistanceMatrix:
    n = len(ids)
    if n < 2:
        return DistanceMatrix(ids, [], [], [])
    k = min(limit, n - 1)
    norms = np.einsum("ij,ij->i", vectors, vectors) if metric is Metric.L2 else None
    best_parts, col_parts = [], []
    for start in range(0, n, _BLOCK):
        check_deadline()
        stop = min(n, start + _BLOCK)
        scores = score_block(vectors, vectors[start:stop], metric, norms)
        scores[np.arange(stop - start), np.arange(start, stop)] = NEG_INF  # not itself
        best, cols = top_k(scores, k)
        best_parts.append(best)
        col_parts.append(cols)
    shown = public_scores(np.concatenate(best_parts), metric)
    cols = np.concatenate(col_parts)
    rows = np.repeat(np.arange(n), k)
    return DistanceMatrix(ids, rows.tolist(), cols.ravel().tolist(),
                          shown.ravel().astype(np.float64).tolist())
