"""Segments: the unit of storage, search and optimisation (as in Qdrant).

A collection is a list of segments. Exactly one ``MutableSegment`` takes new
writes into pre-allocated arrays and answers searches exactly, so a point is
searchable the moment ``upsert`` returns. When it is full it is *frozen*
(still searchable, still accepts tombstones) and the optimizer turns it into
a ``SealedSegment`` with an HNSW index in the background. Rows are never
updated in place: an overwrite appends a new row and tombstones the old one,
which keeps every index append-only.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

import numpy as np
import orjson

from peregrine.vector.ids import KEY_DTYPE, KeyArray, PointId, decode_keys
from peregrine.vector.segment.coarse import Centroids, CoarsePartition
from peregrine.vector.segment.kernels import (
    F32,
    I64,
    NEG_INF,
    full_top_k,
    score_block,
    subset_top_k,
    top_k,
)
from peregrine.vector.segment.nested import NestedView, cached_view
from peregrine.vector.segment.payload_index import FieldIndex, Mask
from peregrine.vector.segment.rows import lacks_primary, payload_part
from peregrine.vector.segment.side import SideStore, SideStoreSlot
from peregrine.vector.segment.side_graph import SideGraph
from peregrine.vector.types import Metric

_EXACT_BLOCK = 65_536  # rows scored per matmul: bounds the temporary (nq, block) matrix
# From this many queries on, a full scan is a blocked matrix product (BLAS);
# fewer are scored by FAISS's SIMD loop, one thread per query.
_BLAS_QUERIES = 20


class Segment(Protocol):
    """What the collection needs from any segment."""

    id: int
    deleted: Mask
    # How many rows ``deleted`` marks: its writers keep it in step, so that a
    # search can tell "no tombstones" without scanning the whole mask.
    n_deleted: int

    @property
    def n_rows(self) -> int: ...

    def keys_view(self) -> KeyArray: ...

    def tombstone(self, rows: I64) -> int:
        """Mark rows deleted; returns how many were live (keeps ``n_deleted`` in step)."""
        ...

    def lookup(self, keys: KeyArray) -> tuple[I64, I64]: ...

    def field_index(self, path: str) -> FieldIndex: ...

    def side_store(self, dense: dict[str, tuple[int, str]], sparse: list[str],
                   multi: dict[str, int] | None = None) -> SideStore:
        """The indexes of the rows' side vectors (named dense, sparse), caught up."""
        ...

    def side_graph(self, name: str, dim: int) -> SideGraph | None:
        """Named dense vector ``name``'s HNSW graph (sealed segments built with one;
        ``dim`` checks it)."""
        ...

    def lacking_primary(self) -> Mask | None:
        """Which rows have no primary vector (their record's lead byte says so,
        ``rows.py``); None when every row has it."""
        ...

    def nested_view(self, key: str) -> NestedView: ...

    def payload(self, row: int) -> dict[str, Any] | None: ...

    def payload_bytes(self, row: int) -> bytes:
        """The row's stored record: its payload JSON and side vectors (``rows.py``)."""
        ...

    def payloads(self, rows: I64) -> list[dict[str, Any] | None]: ...

    def point_ids(self, rows: I64) -> list[PointId]: ...

    def vectors_view(self) -> F32: ...

    def search(
        self, queries: F32, k: int, allowed: Mask | None, ef: int, exact: bool
    ) -> tuple[F32, I64]: ...

    def search_rows(self, queries: F32, k: int, rows: I64) -> tuple[F32, I64]:
        """Exact top-k among the listed (live) rows."""
        ...


def mark_deleted(segment: Segment, rows: I64) -> int:
    """The one way a segment's tombstones change: mask and counter together."""
    rows = np.unique(rows)
    fresh = rows[~segment.deleted[rows]]
    segment.deleted[fresh] = True
    segment.n_deleted += int(fresh.size)
    return int(fresh.size)


def exact_search(
    vectors: F32,
    queries: F32,
    k: int,
    metric: Metric,
    allowed: Mask | None,
    norms: F32 | None = None,
) -> tuple[F32, I64]:
    """Brute force over ``vectors`` (optionally the rows ``allowed``), best first.

    Only allowed rows are scored, which is what makes small filtered subsets
    exact *and* cheap.
    """
    n = vectors.shape[0]
    nq = queries.shape[0]
    if metric is Metric.L1:  # numpy in row blocks (kernels.subset_top_k)
        rows = np.arange(n, dtype=np.int64) if allowed is None else np.flatnonzero(allowed[:n])
        return subset_top_k(vectors, queries, rows, k, metric)
    if allowed is not None:
        # Scored in place by FAISS, single-threaded per query: a masked BLAS
        # product scored the excluded rows too, on threads that fight the
        # server's own for two cores.
        return subset_top_k(vectors, queries, np.flatnonzero(allowed[:n]), k, metric)
    if nq < _BLAS_QUERIES:
        return full_top_k(vectors, queries, k, metric)
    best_s = np.empty((nq, 0), np.float32)
    best_i = np.empty((nq, 0), np.int64)
    for start in range(0, n, _EXACT_BLOCK):
        stop = min(n, start + _EXACT_BLOCK)
        block_norms = norms[start:stop] if norms is not None else None
        scores = score_block(vectors[start:stop], queries, metric, block_norms)
        s, i = top_k(scores, k)
        best_s = np.concatenate([best_s, s], axis=1)
        best_i = np.concatenate([best_i, i + start], axis=1)
        if best_s.shape[1] > k:
            s, pos = top_k(best_s, k)
            best_s, best_i = s, np.take_along_axis(best_i, pos, axis=1)
    valid = best_s != NEG_INF
    if not valid.all():
        # Excluded rows only show up when fewer than k rows are allowed.
        width = int(valid.sum(axis=1).max()) if valid.size else 0
        best_s, best_i = best_s[:, :width], best_i[:, :width]
        best_i[best_s == NEG_INF] = -1
    return best_s, best_i


class MutableSegment:
    """Append-only in-memory segment searched exactly."""

    def __init__(self, segment_id: int, dim: int, capacity: int, metric: Metric, first_seq: int,
                 centroids: Centroids | None = None):
        self.id = segment_id
        self.dim = dim
        self.capacity = capacity
        self.metric = metric
        # WAL sequence of the first operation applied while this was the
        # active segment: everything before it lives in sealed segments.
        self.first_seq = first_seq
        self.frozen = False
        self._vectors = np.empty((capacity, dim), dtype=np.float32)
        self._keys = np.empty(capacity, dtype=KEY_DTYPE)
        self.deleted: Mask = np.zeros(capacity, dtype=np.bool_)
        self.n_deleted = 0
        self._payload_blobs: list[bytes] = []
        self._lacking: Mask = np.zeros(capacity, dtype=np.bool_)  # no primary vector
        self._n_lacking = 0
        self._row_of: dict[bytes, int] = {}
        self._n = 0
        self._fields: dict[str, FieldIndex] = {}
        self._fields_lock = threading.Lock()
        self._side = SideStoreSlot()
        self._nested: dict[str, NestedView] = {}
        # Shared by the collection's segments (trained once); see coarse.py.
        self._coarse = CoarsePartition(capacity, centroids or Centroids(dim))

    @property
    def n_rows(self) -> int:
        return self._n

    def retire(self) -> None:
        """The segment left its collection: background work for it stops."""
        self._coarse.retire()

    @property
    def partition(self) -> CoarsePartition:
        """The coarse partition probed when this segment is searched approximately."""
        return self._coarse

    @property
    def free(self) -> int:
        return self.capacity - self._n

    def append(
        self,
        keys: KeyArray,
        vectors: F32,
        blobs: list[bytes],
    ) -> None:
        """Caller holds the collection's exclusive lock and ensured capacity."""
        start, count = self._n, keys.shape[0]
        stop = start + count
        self._vectors[start:stop] = vectors
        self._keys[start:stop] = keys
        self._payload_blobs.extend(blobs)
        lacking = np.fromiter(map(lacks_primary, blobs), np.bool_, count)
        if lacking.any():
            self._lacking[start:stop] = lacking
            self._n_lacking += int(np.count_nonzero(lacking))
        for offset, key in enumerate(keys.tolist()):
            self._row_of[key] = start + offset
        self._n = stop
        self._coarse.request(self._vectors[:stop], stop)

    def keys_view(self) -> KeyArray:
        return self._keys[: self._n]

    def tombstone(self, rows: I64) -> int:
        return mark_deleted(self, rows)

    def vectors_view(self) -> F32:
        return self._vectors[: self._n]

    def lookup(self, keys: KeyArray) -> tuple[I64, I64]:
        """(positions in ``keys``, rows) of keys that have a live row here."""
        row_of = self._row_of
        found = [(pos, row) for pos, key in enumerate(keys.tolist())
                 if (row := row_of.get(key)) is not None and not self.deleted[row]]
        if not found:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        arr = np.asarray(found, dtype=np.int64)
        return arr[:, 0], arr[:, 1]

    def payload(self, row: int) -> dict[str, Any] | None:
        blob = self._payload_blobs[row]
        return orjson.loads(payload_part(blob))  # type: ignore[no-any-return]

    def payload_bytes(self, row: int) -> bytes:
        return self._payload_blobs[row]

    def payloads(self, rows: I64) -> list[dict[str, Any] | None]:
        blobs = self._payload_blobs
        return [orjson.loads(payload_part(blobs[r])) for r in rows.tolist()]

    def point_ids(self, rows: I64) -> list[PointId]:
        return decode_keys(self._keys[rows])

    def field_index(self, path: str) -> FieldIndex:
        index = self._fields.get(path)
        if index is None:
            with self._fields_lock:
                index = self._fields.setdefault(path, FieldIndex(path))
        index.catch_up(self.payload, self._n)
        return index

    def nested_view(self, key: str) -> NestedView:
        """The objects of the arrays at ``key``, as rows (``nested.py``)."""
        return cached_view(self._nested, self._fields_lock, key, self.payload, self._n)

    def side_store(self, dense: dict[str, tuple[int, str]], sparse: list[str],
                   multi: dict[str, int] | None = None) -> SideStore:
        return self._side.get(dense, sparse, multi, self.payload_bytes, self._n)

    def side_graph(self, name: str, dim: int) -> SideGraph | None:
        return None  # rows still arriving: named vectors are scanned exactly

    def lacking_primary(self) -> Mask | None:
        return self._lacking[: self._n] if self._n_lacking else None

    def search_rows(self, queries: F32, k: int, rows: I64) -> tuple[F32, I64]:
        return subset_top_k(self._vectors[: self._n], queries, rows, k, self.metric)

    def search(
        self, queries: F32, k: int, allowed: Mask | None, ef: int, exact: bool
    ) -> tuple[F32, I64]:
        """Exact until the coarse partition covers rows; then the rows of the
        probed lists plus the newest, not yet assigned rows, so a large backlog
        costs a fraction of a full scan and a write is found at once."""
        n = self._n
        vectors = self._vectors[:n]
        coarse = self._coarse
        assigned = 0 if exact else coarse.usable_rows(vectors, n)
        if assigned == 0:
            return exact_search(vectors, queries, k, self.metric, allowed)
        probes = coarse.probes_for(ef)
        if allowed is not None:
            n_allowed = int(np.count_nonzero(allowed[:n]))
            if n_allowed * coarse.lists <= n * probes:
                # Fewer allowed rows than the probe would score: scan them all.
                return exact_search(vectors, queries, k, self.metric, allowed)
            # Most probed rows may be filtered out; probe more lists to make up.
            probes = int(min(coarse.lists, probes * n / n_allowed))
        if probes >= coarse.lists:
            return exact_search(vectors, queries, k, self.metric, allowed)
        tail = np.arange(assigned, n, dtype=np.int64)
        if allowed is not None:
            tail = tail[allowed[assigned:n]]
        nq = queries.shape[0]
        out_s = np.full((nq, k), NEG_INF, dtype=np.float32)
        out_i = np.full((nq, k), -1, dtype=np.int64)
        for qi in range(nq):
            query = queries[qi : qi + 1]
            cand = coarse.candidates(queries[qi], assigned, probes)
            if allowed is not None:
                cand &= allowed[:assigned]
            rows = np.concatenate([np.flatnonzero(cand), tail])
            if rows.size < k:  # too few candidates near the query: scan exactly
                s, i = exact_search(vectors, query, k, self.metric, allowed)
            else:
                s, i = subset_top_k(vectors, query, rows, k, self.metric)
            out_s[qi, : s.shape[1]] = s[0]
            out_i[qi, : i.shape[1]] = i[0]
        width = int((out_i >= 0).sum(axis=1).max()) if nq else 0
        return out_s[:, :width], out_i[:, :width]
