"""Reads of a collection's side vectors: named dense vectors and sparse ones.

The primary dense vector is searched by the segments' HNSW machinery
(``Collection.search``); every other vector is searched here, exactly, from
each segment's ``SideStore``. Scores come back in the engine's convention
(higher is better; l2 negated) so that ``merge_hits`` merges them like any
other segment's top-k.

IDF (a sparse vector with ``modifier: idf``) is Qdrant's BM25 form,
``ln((N - df + 0.5) / (df + 0.5) + 1)``, with ``N`` the live points of the
collection and ``df`` the live points holding the index, over all segments
at the time of the query: it follows deletes and writes at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from peregrine.core.deadline import check_deadline
from peregrine.core.errors import InvalidInputError
from peregrine.vector.collection import codec
from peregrine.vector.collection.results import WithVectors
from peregrine.vector.errors import InvalidFilterError
from peregrine.vector.segment.filters import CompiledFilter, Filterable
from peregrine.vector.segment.kernels import F32, I64, shortest_floats, subset_top_k
from peregrine.vector.segment.mutable import Segment
from peregrine.vector.segment.payload_index import Mask
from peregrine.vector.segment.rows import side_vectors
from peregrine.vector.segment.side import SideStore, SparseLists, SparseSide
from peregrine.vector.types import (
    CollectionConfig,
    Metric,
    Quantization,
    SparseModifier,
    SparseVector,
    TextIndexParams,
)

Found = list[tuple[Segment, F32, I64]]



def side_store(seg: Filterable, config: CollectionConfig) -> SideStore:
    return seg.side_store({n: (s.dim, s.datatype) for n, s in config.named.items()
                           if not s.multi},
                          list(config.sparse),
                          {n: s.dim for n, s in config.named.items() if s.multi})


def lacking_primary(seg: Filterable, config: CollectionConfig) -> Mask | None:
    """The segment's rows without the primary vector (None when every row has
    it): only a named primary vector may be absent, so a collection of one
    unnamed vector never asks."""
    if not config.vector_name or not config.dense:
        return None
    lacking = seg.lacking_primary()
    return None if lacking is None else lacking[: seg.n_rows]


def metric_of(config: CollectionConfig, name: str) -> Metric:
    """The scoring of vector ``name``: sparse vectors score by dot product."""
    kind = config.vector_kind(name)
    if kind == "primary":
        return config.metric
    if kind == "named":
        return config.named[name].metric
    return Metric.DOT


def as_query(config: CollectionConfig, name: str, query: Any) -> F32 | SparseVector:
    """``query`` checked for vector ``name`` (a side vector)."""
    if config.vector_kind(name) == "sparse":
        return codec.as_sparse(query, "query sparse vector")
    spec = config.named[name]
    rows = codec.as_vectors(query, spec.dim, spec.metric, "query vector")
    if not spec.multi and rows.shape[0] != 1:
        raise InvalidInputError(f"vector {name!r} is a single vector: query with one")
    if spec.multi and not 1 <= rows.shape[0] <= codec.MAX_MULTIVECTOR_ROWS:
        raise InvalidInputError(f"a multivector query has 1 to {codec.MAX_MULTIVECTOR_ROWS} "
                                "vectors")
    return rows


def search(segments: Sequence[Segment], config: CollectionConfig, name: str,
           query: F32 | SparseVector, fetch: int,
           allowed: Callable[[Segment], Mask | None], ef: int | None = None,
           exact: bool = False) -> Found:
    """Each segment's top ``fetch`` rows for ``query`` on side vector ``name``: a
    named dense vector walks its graph in sealed segments (``ef``: the beam,
    else the collection's) unless ``exact``; everything else is exact."""
    found: Found = []
    live = [seg for seg in segments if seg.n_rows]
    if isinstance(query, SparseVector):
        # Each segment's postings of the query's indices, read once: for the
        # document frequencies (IDF) and then for the scores.
        sides = [side_store(seg, config).sparse[name] for seg in live]
        postings = [side.postings(query.indices) for side in sides]
        weights = query.values.astype(np.float64)
        if config.sparse[name] is SparseModifier.IDF:
            weights = weights * _idf(live, postings, query.indices.size)
        for seg, side, found_postings in zip(live, sides, postings, strict=True):
            check_deadline()
            scores, rows = side.top(found_postings, weights, fetch, allowed(seg), seg.n_rows)
            found.append((seg, scores, rows))
        return found
    spec = config.named[name]
    for seg in live:
        check_deadline()
        mask = allowed(seg)
        if mask is None and seg.n_deleted:
            mask = ~seg.deleted[: seg.n_rows]
        graph = None if spec.multi or exact else seg.side_graph(name, spec.dim)
        if graph is not None:
            wide = fetch * config.index.rescore_factor \
                if spec.quantization is Quantization.INT8 else fetch
            walked = graph.search(query, wide, mask, max(ef or config.index.ef, wide),
                                  config.index.full_scan_threshold)
            if walked is not None:
                scores, rows = _rescored(seg, name, query, walked, spec.metric)
                found.append((seg, scores[:, :fetch], rows[:, :fetch]))
                continue
        store = side_store(seg, config)
        index = store.multi[name] if spec.multi else store.dense[name]
        scores, rows = index.search(query, fetch, mask, seg.n_rows, spec.metric)
        found.append((seg, scores, rows))
    return found


def _rescored(seg: Segment, name: str, query: F32, rows: I64, metric: Metric
              ) -> tuple[F32, I64]:
    """A graph walk's hits scored exactly, best first, from the rows' own records
    (a few rows: the segment's side store is not needed for them)."""
    vectors = np.stack([np.asarray(side_vectors(seg.payload_bytes(int(r)))[name], np.float32)
                        for r in rows])
    scores, pos = subset_top_k(vectors, query, np.arange(rows.size, dtype=np.int64),
                               rows.size, metric)
    return scores, rows[pos[0]][None, :]


def _idf(segments: Sequence[Segment], lists: Sequence[SparseLists], size: int
         ) -> npt.NDArray[np.float64]:
    total = 0
    df = np.zeros(size, np.int64)
    for seg, found in zip(segments, lists, strict=True):
        n = seg.n_rows
        live = ~seg.deleted[:n] if seg.n_deleted else None
        total += n - seg.n_deleted
        df += SparseSide.doc_freq(found, size, live, n)
    return np.log((total - df + 0.5) / (df + 0.5) + 1.0)


class LayoutFilters:
    """What filters know of a collection (``FilterContext``): ``has_vector`` holds
    for the rows that carry the vector (every row, for an unnamed primary one);
    ``text`` payload indexes give ``match.text`` tokens."""

    def __init__(self, config: CollectionConfig) -> None:
        self.config = config

    def has_vector(self, name: str) -> CompiledFilter:
        config = self.config
        try:
            kind = config.vector_kind(name)
        except InvalidInputError as exc:
            raise InvalidFilterError(f"has_vector: {exc}") from None
        if kind == "primary":
            def has_primary(seg: Filterable) -> Mask:
                lacking = lacking_primary(seg, config)
                return np.ones(seg.n_rows, np.bool_) if lacking is None else ~lacking
            return has_primary
        if kind == "named" and config.named[name].multi:
            return lambda seg: side_store(seg, config).multi[name].present(seg.n_rows).copy()
        if kind == "named":
            return lambda seg: side_store(seg, config).dense[name].present(seg.n_rows).copy()
        return lambda seg: side_store(seg, config).sparse[name].present(seg.n_rows).copy()

    def text_index(self, path: str) -> TextIndexParams | None:
        return self.config.text_indexes.get(path)


def vector_reader(config: CollectionConfig, with_vectors: bool | Sequence[str]) -> WithVectors:
    """What ``with_vectors`` reads in this collection: the primary vector as a list
    (one unnamed vector), or {name: vector} objects (named or sparse vectors;
    a list of names selects some)."""
    if not with_vectors:
        return False
    names = None if with_vectors is True else set(with_vectors)  # type: ignore[arg-type]
    if names is not None:
        for name in names:
            config.vector_kind(name)
    elif not config.has_side_vectors:
        return True
    primary = config.dense and (names is None or config.vector_name in names)
    side = bool(config.named or config.sparse)

    def read(seg: Segment, rows: I64) -> list[Any]:
        out: list[dict[str, Any]] = [{} for _ in range(rows.size)]
        if primary:
            lacking = lacking_primary(seg, config)
            absent = [False] * rows.size if lacking is None else lacking[rows].tolist()
            for row, vector, gone in zip(out, shortest_floats(seg.vectors_view()[rows]),
                                         absent, strict=True):
                if not gone:
                    row[config.vector_name] = vector
        if side:
            store = side_store(seg, config)
            for row, r in zip(out, rows.tolist(), strict=True):
                for name, value in store.vectors(r).items():
                    if names is None or name in names:
                        row[name] = public_vector(value)
        return out

    return read


def public_vector(value: F32 | SparseVector) -> Any:
    if isinstance(value, SparseVector):
        return {"indices": value.indices.tolist(), "values": shortest_floats(value.values)}
    return shortest_floats(value)
