"""The search path of a collection: nearest neighbours by the primary vector
(each segment plans exact vs HNSW, then the per-segment top-k merge) and by a
named dense or sparse vector (``named.py``).

Kept apart from ``collection.py`` for size: ``Collection`` inherits these, and
they use its holder access (``_holder``, ``_replaced``, ``_check_open``),
declared here for the type checker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from peregrine.core.deadline import check_deadline
from peregrine.core.errors import InvalidInputError
from peregrine.vector.collection import codec, named
from peregrine.vector.collection.holder import SegmentHolder
from peregrine.vector.collection.results import WithPayload, check_with_payload, merge_hits
from peregrine.vector.errors import DimensionMismatchError
from peregrine.vector.segment.filters import (
    DEFAULT_FILTER_LIMITS,
    CompiledFilter,
    FilterLimits,
    compile_filter,
    filter_rows,
)
from peregrine.vector.segment.kernels import F32, I64
from peregrine.vector.segment.mutable import Segment
from peregrine.vector.segment.payload_index import Mask
from peregrine.vector.types import CollectionConfig, Hit

MAX_EF = 65_536  # beyond any useful beam; a server sets a tighter cap


class CollectionSearch:
    """Search methods of ``Collection`` (see the module docstring)."""

    _holder: SegmentHolder

    @property
    def config(self) -> CollectionConfig:
        raise NotImplementedError

    @property
    def name(self) -> str:
        raise NotImplementedError

    def _check_open(self) -> None:
        raise NotImplementedError

    def _replaced(self, stale: SegmentHolder) -> SegmentHolder:
        raise NotImplementedError

    @staticmethod
    def _allowed(seg: Segment, compiled: CompiledFilter | None) -> Mask | None:
        if not seg.n_deleted:
            return None if compiled is None else compiled(seg)
        deleted = seg.deleted[: seg.n_rows]
        if compiled is None:
            return ~deleted
        return compiled(seg) & ~deleted

    @classmethod
    def _primary_allowed(cls, seg: Segment, compiled: CompiledFilter | None,
                         config: CollectionConfig) -> Mask | None:
        """``_allowed``, less the rows without the primary vector (``rows.py``)."""
        allowed = cls._allowed(seg, compiled)
        lacking = named.lacking_primary(seg, config)
        if lacking is None:
            return allowed
        return ~lacking if allowed is None else allowed & ~lacking

    def search(
        self,
        vector: Any,
        k: int = 10,
        filter: dict[str, Any] | None = None,
        ef: int | None = None,
        exact: bool = False,
        with_payload: WithPayload = True,
        with_vectors: bool | Sequence[str] = False,
        score_threshold: float | None = None,
        offset: int = 0,
        filter_limits: FilterLimits = DEFAULT_FILTER_LIMITS,
    ) -> list[Hit]:
        """Nearest neighbours of one vector, best first."""
        query = codec.as_vectors(vector, self.config.dim, self.config.metric, "query vector")
        if query.shape[0] != 1:
            raise InvalidInputError("search takes one vector; use search_batch for several")
        return self._search(query, k, filter, ef, exact, with_payload, with_vectors,
                            score_threshold, offset, filter_limits)[0]

    def search_batch(
        self,
        vectors: Any,
        k: int = 10,
        filter: dict[str, Any] | None = None,
        ef: int | None = None,
        exact: bool = False,
        with_payload: WithPayload = True,
        with_vectors: bool | Sequence[str] = False,
        score_threshold: float | None = None,
    ) -> list[list[Hit]]:
        queries = codec.as_vectors(vectors, self.config.dim, self.config.metric, "query vectors")
        return self._search(queries, k, filter, ef, exact, with_payload, with_vectors,
                            score_threshold, 0, DEFAULT_FILTER_LIMITS)

    def _search(
        self,
        queries: F32,
        k: int,
        filter: dict[str, Any] | None,
        ef: int | None,
        exact: bool,
        with_payload: WithPayload,
        with_vectors: bool | Sequence[str],
        score_threshold: float | None,
        offset: int,
        filter_limits: FilterLimits,
    ) -> list[list[Hit]]:
        self._check_open()
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInputError("k (limit) must be a positive integer")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidInputError("offset must be a non-negative integer")
        if ef is not None and (isinstance(ef, bool) or not isinstance(ef, int)
                               or not 1 <= ef <= MAX_EF):
            raise InvalidInputError(f"ef must be an integer between 1 and {MAX_EF}")
        if score_threshold is not None and (
            isinstance(score_threshold, bool) or not isinstance(score_threshold, (int, float))
            or score_threshold != score_threshold
        ):
            raise InvalidInputError("score_threshold must be a number")
        check_with_payload(with_payload)
        compiled = compile_filter(filter, filter_limits, named.LayoutFilters(self.config))
        fetch = int(k) + offset
        holder = self._holder  # what _reading() does, without its context manager
        while not holder.acquire_read():
            holder = self._replaced(holder)
        try:
            if not holder.config.dense:
                raise InvalidInputError(f"collection {self.name!r} has no dense vector "
                                        "to search; name one of its vectors (using)")
            reader = named.vector_reader(holder.config, with_vectors)
            if queries.shape[1] != holder.config.dim:  # restored meanwhile to another dim
                raise DimensionMismatchError(
                    f"query vectors: expected dimension {holder.config.dim}, got "
                    f"{queries.shape[1]}")
            ef_eff = max(ef or holder.config.index.ef, fetch)
            found: list[tuple[Segment, F32, I64]] = []
            scan_limit = holder.config.index.full_scan_threshold
            for seg in holder.segments:
                if seg.n_rows == 0:
                    continue
                check_deadline()
                rows = filter_rows(compiled, seg)
                if rows is not None:
                    if seg.n_deleted:
                        rows = rows[~seg.deleted[rows]]
                    lacking = named.lacking_primary(seg, holder.config)
                    if lacking is not None:
                        rows = rows[~lacking[rows]]
                    if rows.size == 0:
                        continue
                    if rows.size <= scan_limit:  # the planner's exact branch, without a mask
                        scores, found_rows = seg.search_rows(queries, fetch, rows)
                        found.append((seg, scores, found_rows))
                        continue
                allowed = self._primary_allowed(seg, compiled, holder.config)
                if allowed is not None and not allowed.any():
                    continue
                scores, rows = seg.search(queries, fetch, allowed, ef_eff, exact)
                found.append((seg, scores, rows))
            metric = holder.config.metric
            return [merge_hits(found, qi, fetch, offset, metric, with_payload, reader,
                               score_threshold) for qi in range(queries.shape[0])]
        finally:
            holder.release_read()

    def search_named(self, using: str, vector: Any, k: int = 10,
                     filter: dict[str, Any] | None = None,
                     with_payload: WithPayload = True,
                     with_vectors: bool | Sequence[str] = False,
                     score_threshold: float | None = None, offset: int = 0,
                     filter_limits: FilterLimits = DEFAULT_FILTER_LIMITS,
                     ef: int | None = None, exact: bool = False) -> list[Hit]:
        """Nearest neighbours by vector ``using``: the primary one (``search``), a
        named dense one (its graphs in sealed segments, unless ``exact``; ``ef``
        the beam), a multivector or a sparse one (``vector`` a ``SparseVector``
        or {"indices", "values"}), the last two exactly (``named.py``)."""
        self._check_open()
        if self.config.vector_kind(using) == "primary":
            return self.search(vector, k, filter, ef, exact, with_payload, with_vectors,
                               score_threshold, offset, filter_limits)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInputError("k (limit) must be a positive integer")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidInputError("offset must be a non-negative integer")
        if ef is not None and (isinstance(ef, bool) or not isinstance(ef, int)
                               or not 1 <= ef <= MAX_EF):
            raise InvalidInputError(f"ef must be an integer between 1 and {MAX_EF}")
        check_with_payload(with_payload)
        compiled = compile_filter(filter, filter_limits, named.LayoutFilters(self.config))
        fetch = k + offset
        holder = self._holder
        while not holder.acquire_read():
            holder = self._replaced(holder)
        try:
            config = holder.config
            query = named.as_query(config, using, vector)
            found = named.search(holder.segments, config, using, query, fetch,
                                 lambda seg: self._allowed(seg, compiled), ef, exact)
            return merge_hits(found, 0, fetch, offset, named.metric_of(config, using),
                              with_payload, named.vector_reader(config, with_vectors),
                              score_threshold)
        finally:
            holder.release_read()
