"""Turning segment rows into results: merged hits, records, selected payloads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from peregrine.core.errors import InvalidInputError
from peregrine.vector import paths
from peregrine.vector.ids import decode_key
from peregrine.vector.segment.kernels import F32, I64, public_scores, shortest_floats, top_k
from peregrine.vector.segment.mutable import Segment
from peregrine.vector.types import Hit, Metric, Record

# True/False, a list of payload paths to include, or Qdrant's {"include": [...]}
# / {"exclude": [...]} selector.
WithPayload = bool | Sequence[str] | dict[str, list[str]]
# A collection with named or sparse vectors reads a point's vectors as a
# {name: vector} object: such a reader builds them for rows of one segment.
VectorReader = Callable[[Segment, I64], list[Any]]
# False (no vectors), True (the primary vector as a list) or a reader.
WithVectors = bool | VectorReader


def read_vectors(seg: Segment, rows: I64, with_vectors: WithVectors) -> list[Any]:
    if callable(with_vectors):
        return with_vectors(seg, rows)
    if with_vectors:
        return shortest_floats(seg.vectors_view()[rows])
    return [None] * rows.size


def merge_hits(
    found: list[tuple[Segment, F32, I64]],
    qi: int,
    fetch: int,
    offset: int,
    metric: Metric,
    with_payload: WithPayload,
    with_vectors: WithVectors,
    score_threshold: float | None,
) -> list[Hit]:
    """The hits of query ``qi`` from each segment's top ``fetch``, merged, best first."""
    if not found:
        return []
    if len(found) == 1:
        cand_s, cand_r = found[0][1][qi], found[0][2][qi]
        cand_seg = None
    else:
        cand_s = np.concatenate([f[1][qi] for f in found])
        cand_r = np.concatenate([f[2][qi] for f in found])
        cand_seg = np.concatenate([np.full(f[2].shape[1], j) for j, f in enumerate(found)])
    valid = cand_r >= 0
    if not valid.all():
        cand_s, cand_r = cand_s[valid], cand_r[valid]
        cand_seg = cand_seg[valid] if cand_seg is not None else None
    if cand_seg is not None:
        best_s, pos = top_k(cand_s[None, :], fetch)
        cand_s, cand_r, cand_seg = best_s[0], cand_r[pos[0]], cand_seg[pos[0]]
    scores = public_scores(cand_s[offset:fetch], metric)
    rows = cand_r[offset:fetch]
    if score_threshold is not None:
        ok = scores >= score_threshold if metric.higher_is_better else scores <= score_threshold
        cut = int(np.argmin(ok)) if not ok.all() else ok.size
        scores, rows = scores[:cut], rows[:cut]
    if cand_seg is None:
        return segment_hits(found[0][0], rows, scores, with_payload, with_vectors)
    # Hits from several segments: build each segment's, then put them back in
    # score order.
    seg_of = cand_seg[offset:offset + rows.size]
    hits: list[Any] = [None] * rows.size
    for j in np.unique(seg_of).tolist():
        where = np.flatnonzero(seg_of == j)
        part = segment_hits(found[j][0], rows[where], scores[where], with_payload,
                             with_vectors)
        for w, hit in zip(where.tolist(), part, strict=True):
            hits[w] = hit
    return hits


def check_with_payload(with_payload: Any) -> None:
    """A payload selector is a bool, a list of payload paths, or an include/exclude list."""
    if isinstance(with_payload, bool):
        return
    keys = with_payload
    if isinstance(with_payload, dict):
        if len(with_payload) != 1 or next(iter(with_payload)) not in ("include", "exclude"):
            raise InvalidInputError(
                'a payload selector is {"include": [...]} or {"exclude": [...]}')
        keys = next(iter(with_payload.values()))
    if isinstance(keys, str) or not isinstance(keys, (list, tuple)) or not all(
        isinstance(k, str) for k in keys
    ):
        raise InvalidInputError("with_payload must be a bool, a list of payload keys "
                                'or {"include"|"exclude": [keys]}')
    for key in keys:
        paths.parse_path(key)


def select_payload(payload: dict[str, Any] | None,
                   with_payload: WithPayload) -> dict[str, Any] | None:
    """What a reader asked for: None when payloads are off, else an object ({} if none)."""
    if not with_payload:
        return None
    if not payload:
        return {}
    if with_payload is True:
        return payload
    if isinstance(with_payload, dict):
        if "exclude" in with_payload:
            return paths.select(payload, exclude=with_payload["exclude"])
        return paths.select(payload, include=with_payload["include"])
    return paths.select(payload, include=list(with_payload))


def record(key: bytes, seg: Segment, row: int, with_payload: WithPayload,
            with_vectors: WithVectors) -> Record:
    return Record(
        id=decode_key(key),
        payload=select_payload(seg.payload(row), with_payload),
        vector=read_vectors(seg, np.array([row]), with_vectors)[0] if with_vectors else None,
    )


def segment_hits(seg: Segment, rows: I64, scores: npt.NDArray[np.float32],
                  with_payload: WithPayload, with_vectors: WithVectors) -> list[Hit]:
    """Hits that all come from one segment (the usual case): no regrouping."""
    ids = seg.point_ids(rows)
    none: list[Any] = [None] * len(ids)
    payloads: list[Any]
    if with_payload is True:  # the common case: whole payloads, {} for none
        payloads = [p or {} for p in seg.payloads(rows)]
    elif with_payload:
        payloads = [select_payload(p, with_payload) for p in seg.payloads(rows)]
    else:
        payloads = none
    vectors = read_vectors(seg, rows, with_vectors) if with_vectors else none
    return [Hit(i, sc, p, v) for i, sc, p, v in
            zip(ids, shortest_floats(scores), payloads, vectors, strict=True)]
