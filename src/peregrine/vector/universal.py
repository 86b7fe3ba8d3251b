"""Multi-stage queries (Qdrant's ``prefetch``): sub-queries run first, and the
query above them either fuses their rankings or ranks the points they found.

- ``Fusion("rrf")``: each point scores the sum over the lists holding it of
  ``1 / (2 + position)`` (position from 0), as Qdrant does.
- ``Fusion("dbsf")``: each list's scores are mapped through its mean +- three
  (sample) standard deviations onto [0, 1] (a one-point or constant list gives
  0.5), then summed per point.
- A nearest or recommend query ranks exactly the union of the points its
  prefetches returned.
- ``SampleRandom`` picks random points among them.

Every stage combines its own filter with all filters above it, so no stage
spends its ``limit`` on points the request would filter out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from peregrine.core.errors import InvalidInputError
from peregrine.vector.formula import FormulaQuery, Inputs, evaluate
from peregrine.vector.ids import PointId
from peregrine.vector.queries import Fusion, Prefetch, Query, ReadOptions, SampleRandom
from peregrine.vector.types import Hit

RRF_K = 2
MAX_STAGES = 64
MAX_DEPTH = 8

Base = Callable[[Query, ReadOptions], list[Hit]]


def check_prefetch(prefetch: Sequence[Prefetch], max_limit: int, max_ef: int) -> None:
    """Bounded work: at most 64 stages, 8 deep, each within ``max_limit`` and
    ``max_ef``."""
    count = 0

    def walk(nodes: Sequence[Prefetch], depth: int) -> None:
        nonlocal count
        if depth > MAX_DEPTH:
            raise InvalidInputError(f"prefetch is nested more than {MAX_DEPTH} deep")
        for node in nodes:
            count += 1
            if count > MAX_STAGES:
                raise InvalidInputError(f"a query has at most {MAX_STAGES} prefetches")
            if not 1 <= node.limit <= max_limit:
                raise InvalidInputError(f"prefetch limit must be 1..{max_limit} (max_limit)")
            if node.ef is not None and not 1 <= node.ef <= max_ef:
                raise InvalidInputError(f"prefetch hnsw_ef must be between 1 and {max_ef} "
                                        "(max_ef)")
            if node.prefetch and node.query is None:
                raise InvalidInputError("a prefetch with prefetches needs a query to "
                                        "merge them")
            if not node.prefetch and isinstance(node.query, Fusion | FormulaQuery):
                raise InvalidInputError("fusion and formula need prefetches")
            walk(node.prefetch, depth + 1)

    walk(prefetch, 1)


def both(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    if a is None or b is None:
        return a if b is None else b
    return {"must": [a, b]}


def fuse(method: str, sources: Sequence[list[Hit]], limit: int,
         higher_is_better: bool | Sequence[bool] = True) -> list[Hit]:
    """Fused scores, best first. With distances (``higher_is_better`` False, for
    all sources or per source) dbsf normalises the negated distances, so that the
    nearest still score highest."""
    scores: dict[PointId, float] = {}
    directions = [higher_is_better] * len(sources) if isinstance(higher_is_better, bool) \
        else list(higher_is_better)
    for hits, higher in zip(sources, directions, strict=True):
        if not hits:
            continue
        if method == "rrf":  # plain floats: numpy costs more than it saves on ~20 hits
            for position, hit in enumerate(hits):
                scores[hit.id] = scores.get(hit.id, 0.0) + 1.0 / (RRF_K + position)
            continue
        if method == "dbsf":
            raw = np.array([h.score for h in hits], dtype=np.float64)
            if not higher:
                raw = -raw
            spread = float(raw.std(ddof=1)) if raw.size > 1 else 0.0
            if spread == 0.0:
                part = np.full(raw.size, 0.5)
            else:
                low = raw.mean() - 3 * spread
                part = (raw - low) / (6 * spread)
        else:
            raise InvalidInputError(f"unknown fusion {method!r}: rrf or dbsf")
        for hit, value in zip(hits, part.tolist(), strict=True):
            scores[hit.id] = scores.get(hit.id, 0.0) + value
    ranked = sorted(scores.items(), key=lambda item: -item[1])[:limit]
    return [Hit(pid, score) for pid, score in ranked]


@dataclass(frozen=True, slots=True)
class Stages:
    """What running the stages needs from the collection."""

    base: Base  # one stage without prefetches
    sample: Callable[[list[PointId], int], list[PointId]]
    # Whether a stage's scores are similarities (False: distances), by its ``using``.
    higher_is_better: Callable[[str | None], bool]
    # For formulas: the payloads of points (in the order asked), and which of
    # some points a filter condition admits.
    payloads: Callable[[list[PointId]], list[dict[str, Any] | None]] | None = None
    matching: Callable[[dict[str, Any], list[PointId]], set[PointId]] | None = None


def resolve(query: Query, prefetch: Sequence[Prefetch], options: ReadOptions,
            stages: Stages) -> list[Hit]:
    """The hits of ``query`` over ``prefetch`` (ids and scores only, best first,
    ``options.offset`` applied)."""
    sources = [_run(p, options.filter, stages) for p in prefetch]
    hits = _merge(query, sources, options.limit + options.offset, options.filter,
                  options.score_threshold, stages, options.lookup, options.using)
    return hits[options.offset:]


Source = tuple[list[Hit], bool]  # a stage's hits, and whether higher scores are better


def _run(node: Prefetch, above: dict[str, Any] | None, stages: Stages) -> Source:
    flt = both(above, node.filter)
    if node.prefetch:
        sources = [_run(child, flt, stages) for child in node.prefetch]
        hits = _merge(node.query, sources, node.limit, flt, node.score_threshold, stages,
                      node.lookup, node.using)
    else:
        hits = stages.base(node.query, ReadOptions(limit=node.limit, filter=flt, ef=node.ef,
                                                   exact=node.exact,
                                                   score_threshold=node.score_threshold,
                                                   lookup=node.lookup, using=node.using))
    fused = isinstance(node.query, Fusion | SampleRandom | FormulaQuery)  # similarities
    return hits, True if fused else stages.higher_is_better(node.using)


def _merge(query: Query, given: list[Source], limit: int, flt: dict[str, Any] | None,
           threshold: float | None, stages: Stages, lookup: str | None,
           using: str | None) -> list[Hit]:
    sources = [hits for hits, _ in given]
    if isinstance(query, FormulaQuery):
        return _formula(query, sources, limit, threshold, stages)
    if isinstance(query, Fusion):
        fused = fuse(query.method, sources, limit, [higher for _, higher in given])
        return fused if threshold is None else [h for h in fused if h.score >= threshold]
    found = list(dict.fromkeys(h.id for hits in sources for h in hits))
    if not found:
        return []
    if isinstance(query, SampleRandom):
        return [Hit(pid, 0.0) for pid in stages.sample(found, limit)]
    among = both(flt, {"must": [{"has_id": found}]})
    return stages.base(query, replace(ReadOptions(limit=limit, filter=among, exact=True),
                                      score_threshold=threshold, lookup=lookup, using=using))


def _formula(query: FormulaQuery, sources: list[list[Hit]], limit: int,
             threshold: float | None, stages: Stages) -> list[Hit]:
    """The prefetched points ranked by the formula's value (``formula.py``)."""
    ids = list(dict.fromkeys(h.id for hits in sources for h in hits))
    if not ids:
        return []
    payloads, matching = stages.payloads, stages.matching
    if payloads is None or matching is None:
        raise InvalidInputError("formulas are not available here")
    values = evaluate(query, Inputs(
        ids, [{h.id: h.score for h in hits} for hits in sources],
        lambda: payloads(ids),
        lambda cond: matching(cond, ids)))
    order = np.argsort(-values, kind="stable")
    hits = [Hit(ids[i], float(values[i])) for i in order.tolist()]
    if threshold is not None:
        hits = [h for h in hits if h.score >= threshold]
    return hits[:limit]

