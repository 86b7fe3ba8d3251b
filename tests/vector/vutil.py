"""Test helpers: numpy ground truth, tie-aware top-k checks, id ordering.
Imported by the test modules and by crash_writer.py."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

import peregrine

METRICS = ("cosine", "dot", "l2", "l1")


def higher_is_better(metric: str) -> bool:
    return metric not in ("l2", "l1")


def canon(point_id: Any) -> Any:
    """Canonical form of a user id (what the store returns)."""
    if isinstance(point_id, (int, np.integer)) and not isinstance(point_id, bool):
        return int(point_id)
    return str(uuid.UUID(str(point_id)))


def id_sort_key(point_id: Any) -> tuple[int, Any]:
    """Scroll order: integers ascending, then UUIDs by their 16 bytes."""
    if isinstance(point_id, int):
        return (0, point_id)
    return (1, uuid.UUID(point_id).bytes)


def stored_vector(metric: str, vector: Any) -> np.ndarray:
    """What the store keeps for a vector (cosine is normalised), as float64."""
    v = np.asarray(vector, dtype=np.float32).astype(np.float64)
    if metric == "cosine":
        n = np.linalg.norm(v)
        return v / n if n > 0 else v
    return v


def scores(metric: str, query: Any, vectors: np.ndarray) -> np.ndarray:
    """Ground-truth public scores of ``query`` against stored ``vectors`` (float64)."""
    q = np.asarray(query, dtype=np.float32).astype(np.float64)
    vectors = np.asarray(vectors, dtype=np.float64).reshape(-1, q.shape[0])
    if metric == "cosine":
        n = np.linalg.norm(q)
        q = q / n if n > 0 else q
        return vectors @ q
    if metric == "dot":
        return vectors @ q
    if metric == "l1":
        return np.abs(vectors - q).sum(axis=1)
    return np.sqrt(((vectors - q) ** 2).sum(axis=1))


def oracle_scores(metric: str, query: Any, points: Mapping[Any, np.ndarray]) -> dict[Any, float]:
    if not points:
        return {}
    keys = list(points)
    mat = np.stack([points[k] for k in keys])
    return dict(zip(keys, scores(metric, query, mat).tolist(), strict=True))


def score_tol(metric: str, scale: float = 1.0) -> float:
    # l2 distances come from sqrt(|x|^2 - 2x.q + |q|^2) in float32: near-zero
    # distances carry ~sqrt(eps * |x|^2) of error.
    return (5e-3 if metric == "l2" else 2e-4) * max(1.0, scale)


def check_topk(
    hits: Sequence[peregrine.Hit],
    oracle: Mapping[Any, float],
    k: int,
    metric: str,
    tol: float | None = None,
) -> None:
    """``hits`` must be *a* correct top-k of ``oracle`` (id -> score), ties allowed."""
    tol = score_tol(metric) if tol is None else tol
    sign = 1.0 if higher_is_better(metric) else -1.0
    ids = [h.id for h in hits]
    assert len(ids) == len(set(ids)), f"duplicate ids in {ids}"
    expected_n = min(k, len(oracle))
    assert len(hits) == expected_n, f"got {len(hits)} hits, expected {expected_n}"
    for h in hits:
        assert h.id in oracle, f"hit {h.id!r} is not a live/matching point"
        assert abs(h.score - oracle[h.id]) <= tol, (h.id, h.score, oracle[h.id])
    signed = [sign * h.score for h in hits]
    assert all(a >= b - tol for a, b in itertools.pairwise(signed)), signed
    if expected_n == 0:
        return
    kth = sorted((sign * s for s in oracle.values()), reverse=True)[expected_n - 1]
    for h in hits:
        assert sign * oracle[h.id] >= kth - tol, (h.id, oracle[h.id], kth)
    returned = set(ids)
    for pid, s in oracle.items():
        if sign * s > kth + tol:
            assert pid in returned, f"{pid!r} (score {s}) is in the true top-{k} but missing"


def tie_aware_recall(
    hits: Sequence[peregrine.Hit], oracle: Mapping[Any, float], k: int, metric: str
) -> tuple[int, int]:
    """(relevant returned, wanted): a hit is relevant if it scores within the true top-k."""
    wanted = min(k, len(oracle))
    if wanted == 0:
        return 0, 0
    sign = 1.0 if higher_is_better(metric) else -1.0
    tol = score_tol(metric)
    kth = sorted((sign * s for s in oracle.values()), reverse=True)[wanted - 1]
    good = sum(1 for h in hits if h.id in oracle and sign * oracle[h.id] >= kth - tol)
    return min(good, wanted), wanted


def dump(c: peregrine.Collection) -> dict[Any, tuple[Any, tuple[float, ...]]]:
    """Every live point: id -> (payload, vector), via scroll (checks paging too)."""
    out: dict[Any, tuple[Any, tuple[float, ...]]] = {}
    offset = None
    while True:
        page, offset = c.scroll(limit=997, offset=offset, with_vectors=True)
        for r in page:
            assert r.id not in out, f"scroll returned {r.id!r} twice"
            out[r.id] = (r.payload, tuple(r.vector))
        if offset is None:
            return out


def assert_same_points(
    got: Mapping[Any, tuple[Any, Sequence[float]]],
    want: Mapping[Any, tuple[Any, Iterable[float]]],
    atol: float = 1e-6,
) -> None:
    assert set(got) == set(want), (
        f"missing {sorted(set(want) - set(got), key=str)[:10]}, "
        f"extra {sorted(set(got) - set(want), key=str)[:10]}"
    )
    for pid, (payload, vec) in want.items():
        assert got[pid][0] == payload, (pid, got[pid][0], payload)
        np.testing.assert_allclose(np.asarray(got[pid][1]), np.asarray(list(vec)), atol=atol,
                                   err_msg=str(pid))

