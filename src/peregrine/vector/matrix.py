"""The distance matrix of a sample (Qdrant's ``search/matrix``): for each of
``sample`` random points that a filter selects, its ``limit`` nearest among the
sample, as a sparse matrix. Used to cluster or map a collection.

One (sample x sample) score block in numpy, the diagonal masked out, then a
row-wise top-k: exact, and bounded by the sample cap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


def nearest_within(ids: list[PointId], vectors: np.ndarray, metric: Metric,
                   limit: int) -> DistanceMatrix:
    n = len(ids)
    if n < 2:
        return DistanceMatrix(ids, [], [], [])
    scores = score_block(vectors, vectors, metric)
    np.fill_diagonal(scores, NEG_INF)
    best, cols = top_k(scores, min(limit, n - 1))
    shown = public_scores(best, metric)
    rows = np.repeat(np.arange(n), cols.shape[1])
    return DistanceMatrix(ids, rows.tolist(), cols.ravel().tolist(),
                          shown.ravel().astype(np.float64).tolist())
