"""Exact reads under a score of the caller's (recommend's ``best_score`` and
``sum_scores``, discovery and context searches): every live row the filter
admits is scored in numpy, segment by segment, blocks of rows at a time, and
the best ``k`` of all segments are kept. Higher scores are better.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from peregrine.core.deadline import check_deadline
from peregrine.vector.collection.results import WithPayload, WithVectors, segment_hits
from peregrine.vector.segment.kernels import F32, top_k
from peregrine.vector.segment.mutable import Segment
from peregrine.vector.segment.payload_index import Mask
from peregrine.vector.types import Hit

Scorer = Callable[[F32], F32]  # (n, dim) stored vectors -> (n,) scores
_BLOCK = 65_536


def scan(segments: Sequence[Segment], allowed: Callable[[Segment], Mask | None],
         score: Scorer, k: int, offset: int, with_payload: WithPayload, with_vectors: WithVectors,
         score_threshold: float | None) -> list[Hit]:
    fetch = k + offset
    parts_s, parts_r, parts_seg = [], [], []
    for j, seg in enumerate(segments):
        mask = allowed(seg)
        rows = np.arange(seg.n_rows) if mask is None else np.flatnonzero(mask)
        vectors = seg.vectors_view()
        for start in range(0, rows.size, _BLOCK):
            check_deadline()
            block = rows[start:start + _BLOCK]
            scores = np.asarray(score(vectors[block]), dtype=np.float32)
            best, pos = top_k(scores[None, :], fetch)
            parts_s.append(best[0])
            parts_r.append(block[pos[0]])
            parts_seg.append(np.full(pos.shape[1], j))
    if not parts_s:
        return []
    all_s, all_r, all_seg = (np.concatenate(parts_s), np.concatenate(parts_r),
                             np.concatenate(parts_seg))
    best, pos = top_k(all_s[None, :], fetch)
    scores, rows, seg_of = best[0][offset:], all_r[pos[0]][offset:], all_seg[pos[0]][offset:]
    if score_threshold is not None:
        keep = scores >= score_threshold
        scores, rows, seg_of = scores[keep], rows[keep], seg_of[keep]
    hits: list[Hit | None] = [None] * rows.size
    for j in np.unique(seg_of).tolist():
        where = np.flatnonzero(seg_of == j)
        for w, hit in zip(where.tolist(), segment_hits(segments[j], rows[where], scores[where],
                                                       with_payload, with_vectors),
                          strict=True):
            hits[w] = hit
    return [h for h in hits if h is not None]
