"""The write path of a collection: upserts (versioned and conditional), deletes,
payload and vector edits, and atomic batches of them.

Kept apart from ``collection.py`` for size: ``Collection`` inherits these, and
they use its holder access (``_writing``, ``_check_open``, ...), declared here
for the type checker. Every write reduces to WAL records of upserts and
deletes (``codec``) appended and applied by the holder; rows are copy-on-write,
so a payload or vector edit re-upserts the point with the rest of it kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from peregrine.core.errors import InvalidInputError
from peregrine.vector.collection import codec, named
from peregrine.vector.collection.holder import SegmentHolder
from peregrine.vector.collection.optimizer import Optimizer
from peregrine.vector.collection.wal import Op
from peregrine.vector.errors import InvalidPayloadError, PointNotFoundError
from peregrine.vector.ids import KeyArray, check_unique, decode_key, encode_ids
from peregrine.vector.segment import rows as records
from peregrine.vector.segment.filters import (
    DEFAULT_FILTER_LIMITS,
    CompiledFilter,
    FilterLimits,
    compile_filter,
)
from peregrine.vector.segment.kernels import F32
from peregrine.vector.types import CollectionConfig

UPDATE_MODES = ("upsert", "insert_only", "update_only")


class CollectionWrites:
    """Write methods of ``Collection`` (see the module docstring)."""

    _batch: ContextVar[SegmentHolder | None]
    _replacing: threading.Lock
    _closed: bool
    _holder: SegmentHolder
    _optimizer: Optimizer

    @property
    def config(self) -> CollectionConfig:
        raise NotImplementedError

    def _check_open(self) -> None:
        raise NotImplementedError

    def _writing(self) -> AbstractContextManager[SegmentHolder]:
        raise NotImplementedError

    def _matching_keys(self, holder: SegmentHolder, compiled: CompiledFilter | None) -> KeyArray:
        raise NotImplementedError

    def _open(self, config: CollectionConfig) -> tuple[SegmentHolder, Optimizer]:
        raise NotImplementedError

    @staticmethod
    def _retire(holder: SegmentHolder, optimizer: Optimizer) -> None:
        raise NotImplementedError

    def upsert(self, ids: Any, vectors: Any, payloads: Sequence[Any] | None = None,
               version_key: str | None = None, side: Sequence[Any] | None = None,
               update_filter: dict[str, Any] | None = None, update_mode: str = "upsert",
               filter_limits: FilterLimits = DEFAULT_FILTER_LIMITS) -> int:
        """Insert or replace points; atomic per call. Returns the WAL sequence number.

        With ``version_key``, every payload carries an integer version under that key
        and a point is written only if it is new or its stored version is lower: a
        redelivered or replayed event never duplicates a write nor puts an older
        version over a newer one (the check and the write happen under one lock).

        ``side``: per point, its named dense and sparse vectors ({name: vector},
        a sparse one as ``SparseVector`` or {"indices", "values"}); a point may
        lack any of them. A collection without a dense vector takes
        ``vectors=None``.

        ``update_mode``: "upsert" (insert new points, replace existing ones),
        "insert_only" (existing points are left as they are) or "update_only"
        (points that do not exist are not written). ``update_filter``: an
        existing point is replaced only if it matches this filter (Qdrant's
        conditional update); new points are inserted unless "update_only".
        """
        self._check_open()
        if update_mode not in UPDATE_MODES:
            raise InvalidInputError(f"update_mode must be one of {list(UPDATE_MODES)}")
        conditional = update_filter is not None or update_mode != "upsert"
        compiled = compile_filter(update_filter, filter_limits,
                                  named.LayoutFilters(self.config)) if update_filter else None
        config = self.config
        versions = codec.payload_versions(payloads, version_key) if version_key else None
        batch = self._prepare(config, ids, vectors, payloads, side)
        with self._writing() as holder:
            if holder.config is not config:  # restored meanwhile: maybe another dim
                batch = self._prepare(holder.config, ids, vectors, payloads, side)
            if versions is not None and version_key is not None and batch.keys.size:
                batch = batch.subset(self._newer(holder, batch.keys, versions, version_key))
            if conditional and batch.keys.size:
                batch = batch.subset(self._admitted(holder, batch.keys, compiled, update_mode))
            if batch.keys.size == 0:
                return holder.wal.last_seq
            return holder.log_and_apply(Op.UPSERT, batch.encode(), batch)

    @staticmethod
    def _prepare(config: CollectionConfig, ids: Any, vectors: Any,
                 payloads: Sequence[Any] | None, side: Sequence[Any] | None
                 ) -> codec.UpsertBatch:
        n = len(encode_ids(ids))
        lacking: list[bool] | None = None
        if not config.dense:
            if vectors is not None:
                raise InvalidInputError(f"collection {config.name!r} has no dense vector "
                                        f"{config.vector_name!r}; send only named vectors")
            vectors = np.zeros((n, 1), np.float32)
        elif vectors is None:
            raise InvalidInputError(f"every point needs the vector {config.vector_name!r}")
        elif config.vector_name and isinstance(vectors, list | tuple) and len(vectors) == n \
                and any(v is None for v in vectors) \
                and not any(isinstance(v, int | float) for v in vectors):
            # Points without the primary vector (a row of None): only where it is
            # a named one (Qdrant's named vectors are each optional).
            lacking = [v is None for v in vectors]
            placeholder = np.zeros(config.dim, np.float32)
            vectors = [placeholder if v is None else v for v in vectors]
        side_rows = codec.as_side_rows(config, side, n)
        return codec.prepare_upsert(ids, vectors, payloads, config.dim, config.metric,
                                    side_rows, lacking)

    @staticmethod
    def _admitted(holder: SegmentHolder, keys: KeyArray, compiled: CompiledFilter | None,
                  mode: str) -> npt.NDArray[np.bool_]:
        """Which of ``keys`` a conditional upsert writes (``upsert``'s modes)."""
        exists = np.zeros(keys.size, dtype=np.bool_)
        matches = np.ones(keys.size, dtype=np.bool_)
        with holder.reading():
            for seg in holder.segments:
                pos, rows = seg.lookup(keys)
                if not pos.size:
                    continue
                exists[pos] = True
                if compiled is not None:
                    matches[pos] = compiled(seg)[rows]
        if mode == "insert_only":
            return ~exists
        if mode == "update_only":
            return exists & matches
        return ~exists | matches

    @staticmethod
    def _newer(holder: SegmentHolder, keys: KeyArray, versions: npt.NDArray[np.int64],
               version_key: str) -> npt.NDArray[np.bool_]:
        """Which of ``keys`` are absent or stored with a lower version."""
        keep = np.ones(keys.size, dtype=np.bool_)
        with holder.reading():
            for seg in holder.segments:
                pos, rows = seg.lookup(keys)
                for p, r in zip(pos.tolist(), rows.tolist(), strict=True):
                    stored = (seg.payload(r) or {}).get(version_key)
                    if (isinstance(stored, int) and not isinstance(stored, bool)
                            and stored >= versions[p]):
                        keep[p] = False
        return keep

    def batch(self, operations: Sequence[Callable[[Self], Any]]) -> int:
        """Apply write operations (each calls this collection's write methods) in
        order, atomically: the batch is one WAL record, durable whole or not at
        all, and an operation that fails (bad input included) leaves none of the
        batch behind. Readers may see its first operations before its last.
        Returns the batch's sequence number."""
        self._check_open()
        if self._batch.get() is not None:
            raise InvalidInputError("a batch cannot contain a batch")
        records: list[tuple[int, bytes]] = []
        try:
            with self._writing() as holder:
                token = self._batch.set(holder)
                try:
                    with holder.recording() as records:
                        for operation in operations:
                            operation(self)
                        return holder.commit_recording()
                finally:
                    self._batch.reset(token)
        except BaseException:
            if records:  # applied in memory, never logged: back to what the disk holds
                self._reload(holder)
            raise

    def _reload(self, stale: SegmentHolder) -> None:
        """Reopen the collection from disk (WAL replay), dropping what memory holds
        beyond it."""
        with self._replacing:
            if self._closed or self._holder is not stale:
                return
            self._retire(stale, self._optimizer)
            try:
                self._holder, self._optimizer = self._open(stale.config)
            except BaseException:
                self._closed = True  # neither state is usable: say so rather than guess
                raise

    def delete(self, ids: Any = None, filter: dict[str, Any] | None = None,
               filter_limits: FilterLimits = DEFAULT_FILTER_LIMITS) -> int:
        """Delete by ids or by filter (exactly one). Returns how many points went."""
        self._check_open()
        if (ids is None) == (filter is None):
            raise InvalidInputError("delete needs exactly one of ids= or filter=")
        compiled = compile_filter(filter, filter_limits, named.LayoutFilters(self.config)) \
            if filter is not None else None
        keys = np.unique(encode_ids(ids)) if ids is not None else None
        with self._writing() as holder:
            with holder.reading():
                if keys is None:
                    keys = self._matching_keys(holder, compiled)
                    found = int(keys.size)
                else:
                    found = sum(seg.lookup(keys)[0].size for seg in holder.segments)
            if keys.size:
                holder.log_and_apply(Op.DELETE, codec.encode_delete(keys), keys)
        return found

    def set_payload(self, ids: Any, payload: dict[str, Any], overwrite: bool = False) -> None:
        """Merge (or replace) the payload of existing points; missing ids are ignored."""
        if not isinstance(payload, dict):
            raise InvalidPayloadError("payload must be a JSON object")
        codec.encode_payload(payload)
        self._rewrite_payloads(
            ids, lambda old: payload if overwrite else {**(old or {}), **payload}
        )

    def delete_payload(self, ids: Any, keys: Sequence[str]) -> None:
        if isinstance(keys, str) or not all(isinstance(k, str) for k in keys):
            raise InvalidInputError("keys must be a list of payload key names")
        drop = set(keys)
        self._rewrite_payloads(
            ids, lambda old: {k: v for k, v in (old or {}).items() if k not in drop}
        )

    def clear_payload(self, ids: Any) -> None:
        self._rewrite_payloads(ids, lambda old: None)

    def _rewrite_payloads(self, ids: Any, change: Any) -> None:
        """Payload edits are copy-on-write: the point is re-upserted with its vector."""
        self._check_open()
        keys = np.unique(encode_ids(ids))
        self._rewrite_rows(keys, lambda key, vector, blob, payload: (vector, records.with_payload(
            blob, codec.encode_payload(change(payload)))))

    def _rewrite_rows(self, keys: KeyArray, change: Any) -> None:
        """Rows are copy-on-write: each point found is re-upserted with what
        ``change(key, vector, blob, payload)`` returns as its (vector, blob), in one WAL
        record."""
        with self._writing() as holder:
            with holder.reading():
                found: list[tuple[bytes, F32, bytes]] = []
                for seg in holder.segments:
                    pos, found_rows = seg.lookup(keys)
                    vecs = seg.vectors_view()
                    for p, r in zip(pos.tolist(), found_rows.tolist(), strict=True):
                        vector, blob = change(keys[p], np.asarray(vecs[r]),
                                              seg.payload_bytes(r), seg.payload(r))
                        found.append((keys[p], vector, blob))
            if not found:
                return
            new_keys = np.asarray([f[0] for f in found], dtype=keys.dtype)
            vectors = np.stack([f[1] for f in found])
            batch = codec.UpsertBatch(new_keys, vectors, [f[2] for f in found])
            holder.log_and_apply(Op.UPSERT, batch.encode(), batch)

    def update_vectors(self, ids: Any, vectors: Sequence[dict[str, Any]]) -> None:
        """Replace some vectors of existing points ({name: vector} per id; the
        primary one by its name), keeping their other vectors and payload;
        missing ids are ignored."""
        self._check_open()
        keys = encode_ids(ids)
        check_unique(keys)
        config = self.config
        if isinstance(vectors, dict) or len(vectors) != keys.size:
            raise InvalidInputError(f"got {keys.size} ids but {len(vectors)} vector sets")
        primary: dict[bytes, F32] = {}
        side_in: list[dict[str, Any]] = []
        for key, given in zip(keys.tolist(), vectors, strict=True):
            if not isinstance(given, dict) or not given:
                raise InvalidInputError("each point's vectors are a non-empty {name: vector}")
            rest = dict(given)
            if config.dense and config.vector_name in rest:
                primary[key] = codec.as_vectors(rest.pop(config.vector_name), config.dim,
                                                config.metric)[0]
            side_in.append(rest)
        side_rows = codec.as_side_rows(config, side_in, keys.size) or []
        new_side = dict(zip(keys.tolist(), side_rows, strict=True))
        with self._writing() as holder, holder.reading():
            found = set()
            for seg in holder.segments:
                pos, _ = seg.lookup(keys)
                found.update(pos.tolist())
        if len(found) < keys.size:  # as Qdrant answers: a missing point is a 404
            missing = decode_key(keys[min(set(range(keys.size)) - found)])
            raise PointNotFoundError(f"no point with id {missing!r}")

        def change(key: bytes, vector: F32, blob: bytes, payload: Any) -> tuple[F32, bytes]:
            merged = {**records.side_vectors(blob), **new_side[key]}
            given = primary.get(key)
            lacks = given is None and records.lacks_primary(blob)
            return vector if given is None else given, records.pack_row(
                bytes(records.payload_part(blob)), merged, lacks)

        self._rewrite_rows(keys, change)

    def delete_vectors(self, ids: Any, names: Sequence[str]) -> None:
        """Remove vectors from existing points. The primary vector can go where it
        is a named one (its row is then zeros, marked absent); an unnamed one is
        the point's only vector and cannot."""
        self._check_open()
        config = self.config
        if isinstance(names, str) or not names:
            raise InvalidInputError("vector names must be a non-empty list")
        for name in names:
            if config.vector_kind(name) == "primary" and not config.vector_name:
                raise InvalidInputError("the collection's one unnamed vector cannot be "
                                        "deleted: delete the point")
        drop = set(names)
        drop_primary = config.dense and config.vector_name in drop
        keys = np.unique(encode_ids(ids))

        def change(key: bytes, vector: F32, blob: bytes, payload: Any) -> tuple[F32, bytes]:
            lacks = drop_primary or records.lacks_primary(blob)
            return np.zeros_like(vector) if drop_primary else vector, records.pack_row(
                bytes(records.payload_part(blob)),
                {n: v for n, v in records.side_vectors(blob).items() if n not in drop}, lacks)

        self._rewrite_rows(keys, change)
