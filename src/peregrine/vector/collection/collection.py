"""A collection: a segment holder, its optimizer and the read/write API over them.

Write path: validate -> append one WAL record -> apply under the exclusive
lock (tombstone old versions, append to the mutable segment). The call
returns only after the apply, so reads see the write at once (no refresh
interval). Read path: under the shared lock, evaluate the filter per segment,
let each segment plan exact-vs-HNSW, merge the per-segment top-k.

Restoring a snapshot replaces the holder: the snapshot is unpacked and fully
opened in a staging directory first (``snapshot.unpack_checked``), so a bad
one is refused with the collection untouched; only then are the directories
exchanged and the new holder published.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

from peregrine.core.deadline import check_deadline
from peregrine.core.errors import ClosedError, InvalidInputError, StorageError
from peregrine.core.fsio import exchange_dirs
from peregrine.runtime.malloc import release_free_memory
from peregrine.vector import paths
from peregrine.vector.collection import named, snapshot
from peregrine.vector.collection.holder import SegmentHolder
from peregrine.vector.collection.optimizer import Optimizer
from peregrine.vector.collection.ordering import ordered_records
from peregrine.vector.collection.results import (
    WithPayload,
    check_with_payload,
    record,
)
from peregrine.vector.collection.scan import Scorer, scan
from peregrine.vector.collection.search import CollectionSearch
from peregrine.vector.collection.writes import CollectionWrites
from peregrine.vector.ids import (
    KeyArray,
    PointId,
    decode_key,
    decode_keys,
    encode_id,
    encode_ids,
)
from peregrine.vector.segment.filters import (
    DEFAULT_FILTER_LIMITS,
    CompiledFilter,
    FilterLimits,
    compile_filter,
)
from peregrine.vector.segment.mutable import MutableSegment, Segment
from peregrine.vector.segment.sealed import BuildCancelledError, SealedSegment
from peregrine.vector.segment.side import warm_in_background
from peregrine.vector.types import (
    FACET_INDEX_KINDS,
    LAYOUT_ROLES,
    PAYLOAD_INDEX_KINDS,
    CollectionConfig,
    CollectionInfo,
    Hit,
    IndexConfig,
    Quantization,
    Record,
    TextIndexParams,
)

log = logging.getLogger(__name__)


def _graph_settings(change: dict[str, Any]) -> dict[str, Any]:
    """A named vector's graph settings, checked: ``m`` and ``ef_construction``
    whole numbers or None (the collection's), ``quantization`` int8 or none."""
    unknown = set(change) - {"m", "ef_construction", "quantization"}
    if unknown:
        raise InvalidInputError(f"a named vector's graph takes no {sorted(unknown)}")
    out = dict(change)
    for key in ("m", "ef_construction"):
        value = out.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidInputError(f"{key} must be a whole number")
    if "quantization" in out:
        try:
            out["quantization"] = Quantization(out["quantization"])
        except ValueError:
            raise InvalidInputError("quantization must be 'int8' or 'none'") from None
    return out


class Collection(CollectionSearch, CollectionWrites):
    def __init__(
        self,
        directory: Path,
        config: CollectionConfig,
        fsync: str = "group",
        fsync_interval_ms: int = 50,
        background: bool = True,
    ) -> None:
        self.directory = directory
        self._fsync = fsync
        self._fsync_interval_ms = fsync_interval_ms
        self._background = background
        self._replacing = threading.Lock()  # held while a restore swaps the holder
        self._closed = False
        # The holder a batch in this context writes to: its operations' own
        # ``_writing()`` re-enter it rather than wait for themselves.
        self._batch: ContextVar[SegmentHolder | None] = ContextVar(
            f"batch-{id(self)}", default=None)
        self._holder, self._optimizer = self._open(config)

    def _open(self, config: CollectionConfig) -> tuple[SegmentHolder, Optimizer]:
        holder = SegmentHolder(self.directory, config, self._fsync, self._fsync_interval_ms)
        optimizer = Optimizer(holder)
        holder.on_freeze = optimizer.wake
        if self._background:
            optimizer.start()
            if config.sparse:
                warm_in_background()
        return holder, optimizer

    # -- access to the live holder -------------------------------------------------
    def _reading(self) -> AbstractContextManager[SegmentHolder]:
        """The live holder with its shared lock held (waits out a restore)."""
        return self._live(writes=False)

    def _writing(self) -> AbstractContextManager[SegmentHolder]:
        """The live holder with writes to it paused for this caller."""
        return self._live(writes=True)

    @contextmanager
    def _live(self, writes: bool) -> Iterator[SegmentHolder]:
        batch = self._batch.get()
        if writes and batch is not None:
            yield batch
            return
        holder = self._holder
        while not (holder.acquire_writes() if writes else holder.acquire_read()):
            holder = self._replaced(holder)
        try:
            yield holder
        finally:
            if writes:
                holder.release_writes()
            else:
                holder.release_read()

    def _replaced(self, stale: SegmentHolder) -> SegmentHolder:
        while True:
            with self._replacing:
                if self._closed:
                    raise ClosedError(f"collection {self.name!r} is closed")
                if self._holder is not stale:
                    return self._holder
                if not stale.poisoned:
                    raise ClosedError(f"collection {self.name!r} is closed")
            time.sleep(0.001)  # a failed batch's reopen is on its way (``_reload``)

    @property
    def config(self) -> CollectionConfig:
        return self._holder.config

    @property
    def name(self) -> str:
        return self._holder.config.name

    @property
    def segments(self) -> tuple[Segment, ...]:
        """The segments right now (for inspection; they change as writes arrive)."""
        with self._reading() as holder:
            return tuple(holder.segments)

    # -- lifecycle ------------------------------------------------------------
    def close(self) -> None:
        with self._replacing:
            if self._closed:
                return
            self._closed = True
            self._retire(self._holder, self._optimizer)

    @staticmethod
    def _retire(holder: SegmentHolder, optimizer: Optimizer) -> None:
        """Stop the optimizer, wait out any build (also one ``optimize()`` runs in a
        caller's thread; it stops within a chunk), then close the holder."""
        optimizer.stop()
        with optimizer.paused():
            holder.close()  # waits out readers and writers too

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"collection {self.name!r} is closed")

    # -- reads ----------------------------------------------------------------
    def _matching_keys(self, holder: SegmentHolder, compiled: CompiledFilter | None) -> KeyArray:
        parts = []
        for seg in holder.segments:
            check_deadline()
            allowed = self._allowed(seg, compiled)
            keys = seg.keys_view()
            parts.append(keys if allowed is None else keys[allowed])
        return np.unique(np.concatenate(parts)) if parts else np.empty(0, "S17")

    def ids_matching(self, filter: dict[str, Any] | None,
                     filter_limits: FilterLimits = DEFAULT_FILTER_LIMITS) -> list[PointId]:
        """Every live point id the filter selects, in id order (one filter pass)."""
        self._check_open()
        compiled = compile_filter(filter, filter_limits, named.LayoutFilters(self.config))
        with self._reading() as holder:
            return decode_keys(self._matching_keys(holder, compiled))

    def retrieve(
        self, ids: Any, with_payload: WithPayload = True, with_vectors: bool | Sequence[str] = False
    ) -> list[Record]:
        """Points by id, in the order asked; unknown ids are skipped (as Qdrant does)."""
        self._check_open()
        check_with_payload(with_payload)
        keys = encode_ids(ids)
        out: dict[int, tuple[Segment, int]] = {}
        with self._reading() as holder:
            for seg in holder.segments:
                pos, rows = seg.lookup(keys)
                for p, r in zip(pos.tolist(), rows.tolist(), strict=True):
                    out[p] = (seg, r)
            reader = named.vector_reader(holder.config, with_vectors)
            return [record(keys[p], *out[p], with_payload, reader) for p in sorted(out)]

    def count(self, filter: dict[str, Any] | None = None,
              filter_limits: FilterLimits = DEFAULT_FILTER_LIMITS) -> int:
        self._check_open()
        compiled = compile_filter(filter, filter_limits, named.LayoutFilters(self.config))
        with self._reading() as holder:
            total = 0
            for seg in holder.segments:
                check_deadline()
                allowed = self._allowed(seg, compiled)
                total += seg.n_rows if allowed is None else int(np.count_nonzero(allowed))
            return total

    def facet(self, key: str, filter: dict[str, Any] | None = None, limit: int = 10,
              filter_limits: FilterLimits = DEFAULT_FILTER_LIMITS) -> list[tuple[Any, int]]:
        """The ``limit`` most frequent values of the indexed payload field ``key``
        among the live points the filter selects, as (value, points holding it),
        most frequent first, then by value. Exact: every segment's postings are
        counted against the filter's mask."""
        self._check_open()
        compiled = compile_filter(filter, filter_limits, named.LayoutFilters(self.config))
        with self._reading() as holder:
            kind = holder.config.payload_indexes.get(key)
            if kind not in FACET_INDEX_KINDS:
                raise InvalidInputError(
                    f"facet needs a payload index on {key!r} of one of the types "
                    f"{list(FACET_INDEX_KINDS)}; create one first")
            totals: dict[Any, int] = {}
            for seg in holder.segments:
                check_deadline()
                allowed = self._allowed(seg, compiled)
                for value, n in seg.field_index(key).value_counts(allowed, seg.n_rows):
                    totals[value] = totals.get(value, 0) + n
        # The values the declared type indexes (a keyword index ignores numbers...).
        wanted = {"keyword": str, "uuid": str, "integer": int, "bool": tuple}[kind]
        hits = [(v[1] if isinstance(v, tuple) else v, n) for v, n in totals.items()
                if type(v) is wanted]
        # Most frequent first; ties by value, booleans, then numbers, then strings.
        hits.sort(key=lambda h: (-h[1], isinstance(h[0], str), not isinstance(h[0], bool),
                                 h[0]))
        return hits[:limit]

    def scan(self, score: Scorer, k: int = 10, filter: dict[str, Any] | None = None,
             offset: int = 0, with_payload: WithPayload = True,
             with_vectors: bool | Sequence[str] = False,
             score_threshold: float | None = None,
             filter_limits: FilterLimits = DEFAULT_FILTER_LIMITS) -> list[Hit]:
        """The ``k`` live points the filter admits that ``score`` (stored vectors ->
        scores, higher better) ranks best, skipping ``offset``: exact (``scan.py``)."""
        self._check_open()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or offset < 0:
            raise InvalidInputError("k (limit) must be positive and offset non-negative")
        check_with_payload(with_payload)
        compiled = compile_filter(filter, filter_limits, named.LayoutFilters(self.config))
        with self._reading() as holder:
            config = holder.config
            return scan(list(holder.segments),
                        lambda seg: self._primary_allowed(seg, compiled, config),
                        score, k, offset, with_payload,
                        named.vector_reader(holder.config, with_vectors), score_threshold)

    def scroll_ordered(self, key: str, descending: bool = False,
                       start_from: float | None = None, filter: dict[str, Any] | None = None,
                       limit: int = 10, with_payload: WithPayload = True,
                       with_vectors: bool | Sequence[str] = False,
                       filter_limits: FilterLimits = DEFAULT_FILTER_LIMITS) -> list[Record]:
        """The first ``limit`` live points the filter selects in the order of the
        numeric payload field ``key`` (which needs an integer or float index), from
        ``start_from`` on (``ordering.py``)."""
        self._check_open()
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidInputError("limit must be a positive integer")
        check_with_payload(with_payload)
        compiled = compile_filter(filter, filter_limits, named.LayoutFilters(self.config))
        with self._reading() as holder:
            kind = holder.config.payload_indexes.get(key)
            if kind not in ("integer", "float"):
                raise InvalidInputError(f"order_by needs an integer or float payload index "
                                        f"on {key!r}; create one first")
            return ordered_records(list(holder.segments),
                                   lambda seg: self._allowed(seg, compiled), key,
                                   descending, start_from, limit, with_payload,
                                   named.vector_reader(holder.config, with_vectors),
                                   integers=kind == "integer")

    def scroll(
        self,
        filter: dict[str, Any] | None = None,
        limit: int = 10,
        offset: Any = None,
        with_payload: WithPayload = True,
        with_vectors: bool | Sequence[str] = False,
        filter_limits: FilterLimits = DEFAULT_FILTER_LIMITS,
    ) -> tuple[list[Record], Any]:
        """Points in id order from ``offset`` (an id, inclusive); returns (page, next id)."""
        self._check_open()
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidInputError("limit must be a positive integer")
        check_with_payload(with_payload)
        compiled = compile_filter(filter, filter_limits, named.LayoutFilters(self.config))
        start = np.asarray([encode_id(offset)], dtype="S17")[0] if offset is not None else None
        with self._reading() as holder:
            segments = list(holder.segments)
            keys_parts, seg_parts, row_parts = [], [], []
            for j, seg in enumerate(segments):
                check_deadline()
                allowed = self._allowed(seg, compiled)
                keys = seg.keys_view()
                rows = np.arange(seg.n_rows) if allowed is None else np.flatnonzero(allowed)
                sel = keys[rows]
                if start is not None:
                    keep = sel >= start
                    sel, rows = sel[keep], rows[keep]
                keys_parts.append(sel)
                row_parts.append(rows)
                seg_parts.append(np.full(rows.size, j))
            all_keys = np.concatenate(keys_parts)
            if all_keys.size == 0:
                return [], None
            take = min(limit + 1, all_keys.size)
            order = (np.argpartition(all_keys, take - 1)[:take] if take < all_keys.size
                     else np.arange(all_keys.size))
            order = order[np.argsort(all_keys[order], kind="stable")]
            all_rows, all_segs = np.concatenate(row_parts), np.concatenate(seg_parts)
            reader = named.vector_reader(holder.config, with_vectors)
            page = [record(all_keys[i], segments[int(all_segs[i])], int(all_rows[i]),
                           with_payload, reader) for i in order[:limit].tolist()]
            next_id = decode_key(all_keys[order[limit]]) if take > limit else None
            return page, next_id

    # -- settings ---------------------------------------------------------------------
    def update_settings(self, index: dict[str, Any] | None = None,
                        declared: dict[str, Any] | None = None,
                        named: dict[str, dict[str, Any]] | None = None) -> None:
        """Change index parameters (``IndexConfig`` fields; segments built from now
        on use them, built ones keep theirs), a named dense vector's graph settings
        (``named``: name -> ``DenseSpec`` fields ``m``, ``ef_construction``,
        ``quantization``; likewise for graphs built from now on), and replace what
        a protocol declared (``{protocol: settings}``), durably."""
        self._check_open()
        with self._writing() as holder:
            config = holder.config
            new_index = config.index if not index else IndexConfig.from_dict(
                {**config.index.to_dict(), **index})
            specs = dict(config.named)
            for name, change in (named or {}).items():
                spec = specs.get(name)
                if spec is None or spec.multi:
                    raise InvalidInputError(f"{name!r} is not a named dense vector of "
                                            f"collection {config.name!r}")
                specs[name] = dataclasses.replace(spec, **_graph_settings(change))
            holder.update_config(config.replace(
                index=new_index, declared={**config.declared, **(declared or {})},
                named=specs))

    # -- payload indexes ------------------------------------------------------------
    def create_payload_index(self, field: str, schema: str = "keyword",
                             params: dict[str, Any] | None = None,
                             layout: str | None = None) -> None:
        """Declare an index; sealed segments persist it from their next build on.
        ``layout`` "tenant" or "principal" (Qdrant's ``is_tenant`` /
        ``is_principal``): builds from then on group rows by this field
        (``segment/layout.py``)."""
        self._check_open()
        if not isinstance(field, str) or not field:
            raise InvalidInputError("field name must be a non-empty string")
        paths.parse_path(field)
        if schema not in PAYLOAD_INDEX_KINDS:
            raise InvalidInputError(f"payload index type must be one of {PAYLOAD_INDEX_KINDS}")
        if layout is not None and schema not in LAYOUT_ROLES.get(layout, ()):
            roles = ", ".join(f"{r} ({'/'.join(k)})" for r, k in LAYOUT_ROLES.items())
            raise InvalidInputError(f"a {schema!r} index cannot be a {layout!r} layout key; "
                                    f"the roles and their index types: {roles}")
        text = {**self.config.text_indexes}
        text.pop(field, None)
        if schema == "text":
            text[field] = TextIndexParams.from_dict(params or {})
        elif params:
            raise InvalidInputError(f"a {schema!r} index takes no parameters here")
        with self._writing() as holder:
            config = holder.config
            arranged = {f: r for f, r in config.layout.items() if f != field}
            if layout is not None:
                arranged[field] = layout
            holder.update_config(config.replace(
                payload_indexes={**config.payload_indexes, field: schema}, text_indexes=text,
                layout=arranged))
        with self._reading() as holder:
            for seg in holder.segments:  # build now rather than on the first query
                seg.field_index(field)

    def delete_payload_index(self, field: str) -> None:
        self._check_open()
        with self._writing() as holder:
            config = holder.config
            holder.update_config(config.replace(
                payload_indexes={k: v for k, v in config.payload_indexes.items() if k != field},
                text_indexes={k: v for k, v in config.text_indexes.items() if k != field},
                layout={k: v for k, v in config.layout.items() if k != field}))

    def set_declared(self, protocol: str, settings: dict[str, Any]) -> None:
        """Remember settings a protocol's client declared (see ``CollectionConfig``)."""
        self.change_declared(protocol, lambda _: settings)

    def change_declared(self, protocol: str,
                        change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Replace a protocol's declared settings by ``change(current)``, under the
        write lock: concurrent changes (one per payload index, say) all land."""
        self._check_open()
        with self._writing() as holder:
            config = holder.config
            settings = change(dict(config.declared.get(protocol, {})))
            if settings != config.declared.get(protocol):
                holder.update_config(config.replace(declared={**config.declared,
                                                              protocol: settings}))

    # -- maintenance ------------------------------------------------------------
    def evict_vectors(self) -> None:
        """Drop the sealed segments' vector pages from memory, so that the next
        reads come from disk (benchmarks of reads colder than memory)."""
        with self._reading() as holder:
            for seg in holder.sealed_segments():
                seg.evict_vectors()

    def optimize(self) -> None:
        """Seal and index everything pending, merge segments, drop tombstones."""
        self._check_open()
        try:
            self._optimizer.run_full()
            release_free_memory()  # the replaced segments are gone by now
        except BuildCancelledError:
            raise ClosedError(f"collection {self.name!r} closed during optimize()") from None

    def snapshot(self, path: str | Path) -> Path:
        with self._replacing:  # one consistent holder and optimizer: no restore meanwhile
            self._check_open()
            return snapshot.create_snapshot(self._holder, self._optimizer, Path(path))

    def restore(self, path: str | Path) -> None:
        """Replace this collection's contents with a snapshot's (same name kept).

        The snapshot is unpacked and opened in a staging directory first; if it
        does not load completely, InvalidSnapshotError is raised and nothing
        here has changed.
        """
        self._check_open()
        staging = self.directory.parent / f".restore-{uuid.uuid4().hex}"
        config = snapshot.unpack_checked(Path(path), staging, self.name, self._fsync)
        try:
            self._replace_with(staging, config)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _replace_with(self, staging: Path, config: CollectionConfig) -> None:
        with self._replacing:
            if self._closed:
                raise ClosedError(f"collection {self.name!r} is closed")
            old_holder, old_optimizer = self._holder, self._optimizer
            self._retire(old_holder, old_optimizer)
            exchange_dirs(staging, self.directory)  # staging now holds the old contents
            try:
                self._holder, self._optimizer = self._open(config)
            except BaseException:
                log.exception("collection %s: restored contents failed to open; "
                              "putting the previous contents back", config.name)
                exchange_dirs(staging, self.directory)
                try:
                    self._holder, self._optimizer = self._open(old_holder.config)
                except BaseException:
                    self._closed = True  # neither opens: say so rather than half-work
                    raise
                raise StorageError(f"collection {config.name!r}: the snapshot could not be "
                                   "opened in place; the previous contents were kept") from None

    def info(self) -> CollectionInfo:
        self._check_open()
        optimizer = self._optimizer
        with self._reading() as holder:
            points = indexed = 0
            for seg in holder.segments:
                live = seg.n_rows - seg.n_deleted
                points += live
                if isinstance(seg, SealedSegment):
                    indexed += live
            waiting = optimizer.building or optimizer.pending()
            return CollectionInfo(
                name=holder.config.name,
                config=holder.config,
                points=points,
                indexed_points=indexed,
                segments=len(holder.segments),
                sealed_segments=len(holder.sealed_segments()),
                index_backlog_segments=len(holder.frozen_segments()),
                wal_bytes=holder.wal.size_bytes(),
                status="yellow" if waiting else "green",
                optimizer_error=optimizer.last_error,
            )

    def __len__(self) -> int:
        return self.count()

    def __repr__(self) -> str:
        cfg = self.config
        return f"Collection({self.name!r}, dim={cfg.dim}, metric={cfg.metric.value})"


__all__ = ["Collection", "MutableSegment", "WithPayload"]
