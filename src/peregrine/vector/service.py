"""The vector store's front door: everything other faces and protocols may use.

Protocols translate their wire format into the typed requests of
``peregrine.vector.queries`` and call this; other faces call it in process.
What a request *means* lives here and nowhere else: search and batch search,
recommendation by example, the query API (nearest to a vector or to a stored
point, maximal marginal relevance, points in id order), which ids a filter
selects, the caps on every size a request controls, the result cache that a
write makes stale, named snapshots with their recovery, and collection
aliases: every method that takes a collection name also takes an alias, and
``_resolve`` is the one place where one becomes the other.

Results are typed (``Hit``, ``Record``, ``CollectionInfo``, ``SnapshotInfo``,
``AliasInfo``), never loose dicts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from prometheus_client import CollectorRegistry

from peregrine.core.errors import InvalidInputError, PeregrineError
from peregrine.vector.bm25 import Bm25Encoder
from peregrine.vector.collection.collection import Collection
from peregrine.vector.collection.database import Database, open_database
from peregrine.vector.collection.results import WithPayload, check_with_payload
from peregrine.vector.collection.snapshot_store import SnapshotInfo, SnapshotStore
from peregrine.vector.documents import Document, DocumentEncoder, split_points
from peregrine.vector.errors import InvalidPointIdError
from peregrine.vector.execution import QueryExecutor
from peregrine.vector.formula import FormulaQuery
from peregrine.vector.groups import Group, GroupLookup, GroupSpec, check_spec, grouped
from peregrine.vector.ids import PointId, decode_key, encode_id
from peregrine.vector.matrix import MAX_SAMPLE, DistanceMatrix, nearest_within
from peregrine.vector.metrics import VectorMetrics
from peregrine.vector.queries import (
    ContextQuery,
    DiscoverQuery,
    Example,
    Fusion,
    Mmr,
    NearestQuery,
    OrderByQuery,
    PointSelector,
    Prefetch,
    Query,
    ReadOptions,
    RecommendQuery,
    SampleRandom,
)
from peregrine.vector.result_cache import CacheStats, ResultCache
from peregrine.vector.service_snapshots import SnapshotDoor
from peregrine.vector.settings import VectorSettings
from peregrine.vector.types import (
    AliasAction,
    AliasInfo,
    CollectionConfig,
    CollectionInfo,
    CreateAlias,
    DeleteAlias,
    DenseSpec,
    Hit,
    IndexConfig,
    Metric,
    Quantization,
    Record,
    RenameAlias,
    SparseModifier,
    SparseVector,
)
from peregrine.vector.universal import check_prefetch
from peregrine.vector.writes import (
    ClearPayload,
    DeletePayload,
    DeletePoints,
    DeleteVectors,
    SetPayload,
    UpdateVectors,
    UpsertPoints,
    WriteOperation,
)

T = TypeVar("T")

__all__ = [
    "AliasAction",
    "AliasInfo",
    "Bm25Encoder",
    "CacheStats",
    "ClearPayload",
    "CollectionConfig",
    "CollectionInfo",
    "ContextQuery",
    "CreateAlias",
    "DeleteAlias",
    "DeletePayload",
    "DeletePoints",
    "DeleteVectors",
    "DenseSpec",
    "DiscoverQuery",
    "DistanceMatrix",
    "Document",
    "Example",
    "FormulaQuery",
    "Fusion",
    "Group",
    "GroupLookup",
    "GroupSpec",
    "Hit",
    "IndexConfig",
    "Metric",
    "Mmr",
    "NearestQuery",
    "OrderByQuery",
    "PointSelector",
    "Prefetch",
    "Quantization",
    "Query",
    "ReadOptions",
    "RecommendQuery",
    "Record",
    "RenameAlias",
    "SampleRandom",
    "SetPayload",
    "SnapshotInfo",
    "SparseModifier",
    "SparseVector",
    "UpdateVectors",
    "UpsertPoints",
    "VectorService",
    "VectorSettings",
    "WriteOperation",
]


class VectorService(SnapshotDoor):
    def __init__(self, db: Database, snapshots: SnapshotStore, settings: VectorSettings) -> None:
        self._db = db
        self._snapshots = snapshots
        self.settings = settings
        self._cache = ResultCache(settings.cache_entries, settings.cache_bytes)
        self._filter_limits = settings.filter_limits
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()
        self._metrics: VectorMetrics | None = None
        self._documents = DocumentEncoder()
        self._exec = QueryExecutor(settings, self._collection, self._documents)

    @classmethod
    def open(cls, data: str | Path, settings: VectorSettings | None = None) -> VectorService:
        settings = settings or VectorSettings()
        data = Path(data)
        db = open_database(data, fsync=settings.fsync)
        try:
            store = SnapshotStore(Path(settings.snapshots) if settings.snapshots
                                  else data / "snapshots", settings.snapshot_url_hosts)
        except BaseException:
            db.close()
            raise
        return cls(db, store, settings)

    def close(self) -> None:
        self._db.close()

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Export collection gauges, cache counters and search latency."""
        self._metrics = VectorMetrics(registry, self._infos, self._cache.stats)

    def collection_infos(self) -> list[CollectionInfo]:
        """Every collection's state (telemetry)."""
        return self._infos()

    def _infos(self) -> list[CollectionInfo]:
        infos = []
        for name in self._db.list_collections():
            try:
                infos.append(self._db.collection(name).info())
            except PeregrineError:  # dropped between list and info
                continue
        return infos

    # -- caps -------------------------------------------------------------------------
    def _check_count(self, n: int, what: str) -> None:
        self._exec.check_count(n, what)

    def _check_read(self, options: ReadOptions) -> None:
        cap = self.settings.max_limit
        if options.limit < 1 or options.offset < 0:
            raise InvalidInputError("limit must be positive and offset non-negative")
        if options.limit + options.offset > cap:
            raise InvalidInputError(f"limit + offset must be at most {cap} (max_limit)")
        if options.ef is not None and not 1 <= options.ef <= self.settings.max_ef:
            raise InvalidInputError(
                f"hnsw_ef must be between 1 and {self.settings.max_ef} (max_ef)")
        check_with_payload(options.with_payload)

    # -- names: collections and aliases --------------------------------------------
    def _resolve(self, name: str) -> str:
        """The collection ``name`` names: itself, or the target of an alias. Every
        method below that reads or writes a collection goes through here (or
        ``_collection``), so that an alias works wherever a collection name does."""
        return self._db.resolve(name)

    def _collection(self, name: str) -> Collection:
        """The collection a name or an alias names; CollectionNotFoundError if none."""
        return self._db.collection(self._resolve(name))

    def update_aliases(self, actions: Sequence[AliasAction]) -> None:
        """Apply ``CreateAlias`` / ``DeleteAlias`` / ``RenameAlias`` actions in order,
        all or none, in one durable write. A reader sees the aliases as they were
        before or after, never in between: delete + create (or create over an
        existing alias) moves readers to another collection in one step.

        Alias names follow the rule of collection names and cannot be one; a
        create needs an existing collection (CollectionNotFoundError), a rename an
        existing alias (AliasNotFoundError); deleting a missing alias is no error.
        """
        if not isinstance(actions, list | tuple):
            raise InvalidInputError("update_aliases takes a list of alias actions")
        self._check_count(len(actions), "alias actions")
        self._db.update_aliases(actions)

    def list_aliases(self, collection: str | None = None) -> list[AliasInfo]:
        """Every alias, or those of one collection (named directly or by an alias)."""
        pairs = self._db.aliases()
        if collection is not None:
            target = self._collection(collection).name
            pairs = [(a, c) for a, c in pairs if c == target]
        return [AliasInfo(a, c) for a, c in pairs]

    # -- collections -------------------------------------------------------------
    def list_collections(self) -> list[str]:
        """The collections (aliases are not listed: see ``list_aliases``)."""
        return self._db.list_collections()

    def has_collection(self, name: str) -> bool:
        """Whether a collection of this very name exists (an alias is not one)."""
        return self._db.has_collection(name)

    def collection_exists(self, name: str) -> bool:
        """Whether ``name`` names a collection, directly or as an alias: whether
        reads and writes addressed to it find one (what Qdrant's /exists answers)."""
        return self._db.has_collection(self._resolve(name))

    def create_collection(self, name: str, dim: int, metric: str | Metric,
                          index: IndexConfig | dict[str, Any] | None = None,
                          declared: dict[str, Any] | None = None, *,
                          vector_name: str = "", dense: bool = True,
                          named: dict[str, DenseSpec] | None = None,
                          sparse: dict[str, SparseModifier] | None = None) -> None:
        """``declared``: protocol -> settings its client set that the engine only keeps.
        ``vector_name``, ``dense``, ``named``, ``sparse``: the collection's vectors
        (``CollectionConfig``). A name an alias has is refused (InvalidInputError)."""
        collection = self._db.create_collection(name, dim, metric, index,
                                                vector_name=vector_name, dense=dense,
                                                named=named, sparse=sparse)
        try:
            for protocol, settings in (declared or {}).items():
                collection.set_declared(protocol, settings)
        finally:
            self._bump(name)

    def drop_collection(self, name: str) -> bool:
        """Drop the collection of this very name and its aliases. Returns False when
        there was nothing to drop (as Qdrant answers, also for an alias's name: a
        drop never follows an alias)."""
        if not self._db.has_collection(name):
            return False
        try:
            self._db.drop_collection(name)
        finally:
            self._bump(name)
            self._cache.drop_collection(name)
            if self._metrics is not None:
                self._metrics.forget_collection(name)
        return True

    def collection_info(self, name: str) -> CollectionInfo:
        """The collection's state plus how many points carry each indexed field."""
        collection = self._collection(name)
        info = collection.info()
        counts = {field: collection.count({"must_not": [{"is_empty": {"key": field}}]})
                  for field in info.config.payload_indexes}
        return dataclasses.replace(info, payload_points=counts)

    def update_collection(self, name: str, index: dict[str, Any] | None = None,
                          declared: dict[str, Any] | None = None,
                          named: dict[str, dict[str, Any]] | None = None) -> None:
        """New index parameters (and named vectors' graph settings) for the segments
        built from now on, and a protocol's declared settings
        (``Collection.update_settings``)."""
        self._write(name, lambda c: c.update_settings(index, declared, named))

    def change_declared(self, name: str, protocol: str,
                        change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """A protocol's declared settings replaced by ``change(current)``, atomically
        (``Collection.change_declared``)."""
        self._write(name, lambda c: c.change_declared(protocol, change))

    def optimize(self, name: str) -> None:
        """Seal and index everything pending and merge segments, now, in this
        thread (benchmarks and maintenance; the background optimizer does the
        same over time)."""
        self._collection(name).optimize()

    def create_payload_index(self, name: str, field: str, kind: str,
                             params: dict[str, Any] | None = None,
                             layout: str | None = None) -> None:
        """``params``: a ``text`` index's tokenizer settings (``TextIndexParams``).
        ``layout`` "tenant" or "principal": storage is organised by the field
        (Qdrant's ``is_tenant`` / ``is_principal``, ``segment/layout.py``)."""
        self._write(name, lambda c: c.create_payload_index(field, kind, params, layout))

    def delete_payload_index(self, name: str, field: str) -> None:
        self._write(name, lambda c: c.delete_payload_index(field))

    # -- writes -----------------------------------------------------------------------
    def version(self, name: str) -> int:
        return self._versions.get(name, 0)

    def _bump(self, name: str) -> None:
        with self._lock:
            self._versions[name] = self._versions.get(name, 0) + 1

    def _write(self, name: str, change: Callable[[Collection], T]) -> T:
        """Apply a change; cached reads of the collection are stale afterwards."""
        collection = self._collection(name)
        try:
            return change(collection)
        finally:
            self._bump(collection.name)

    def upsert(self, name: str, ids: Sequence[PointId], vectors: Any,
               payloads: Sequence[dict[str, Any] | None] | None = None,
               version_key: str | None = None,
               side: Sequence[dict[str, Any] | None] | None = None,
               update_filter: dict[str, Any] | None = None,
               update_mode: str = "upsert") -> int:
        """Insert or replace points; returns the write's sequence number. With
        ``version_key`` a point is written only over a lower stored version
        (``Collection.upsert``): the idempotent write of at-least-once pipelines.
        ``side``: each point's named dense and sparse vectors ({name: vector}).
        ``update_filter`` and ``update_mode``: a conditional write
        (``Collection.upsert``)."""
        self._check_count(len(ids), "points")
        return self._write(name, lambda c: c.upsert(
            ids, vectors, payloads, version_key, side, update_filter, update_mode,
            self._filter_limits))

    def upsert_points(self, name: str, ids: Sequence[PointId], vectors: Sequence[Any],
                      payloads: Sequence[dict[str, Any] | None] | None = None,
                      version_key: str | None = None,
                      update_filter: dict[str, Any] | None = None,
                      update_mode: str = "upsert") -> int:
        """``upsert`` with each point's vectors as given by a client: one array (the
        unnamed vector, "") or {name: vector}, a sparse one as {"indices",
        "values"} or a ``Document`` the store encodes (``documents.py``)."""
        op = UpsertPoints(ids, vectors, payloads, update_filter, update_mode)
        return self._write(name, self._step(op, version_key))  # type: ignore[no-any-return]

    def update_vectors(self, name: str, ids: Sequence[PointId],
                       vectors: Sequence[Any]) -> None:
        """Replace the vectors given (per point: {name: vector}, or one array for
        the unnamed vector), keeping the points' other vectors and payloads."""
        self._write(name, self._step(UpdateVectors(ids, vectors)))

    def delete_vectors(self, name: str, selector: PointSelector, names: Sequence[str]) -> None:
        """Remove named or sparse vectors from the selected points."""
        self._write(name, self._step(DeleteVectors(selector, names)))

    def batch_update(self, name: str, operations: Sequence[WriteOperation]) -> int:
        """Write operations applied in order, atomically (``Collection.batch``):
        all of them or, when one fails, none. Returns the batch's sequence number."""
        self._check_count(len(operations), "operations")
        steps = [self._step(op) for op in operations]  # caps checked before any write
        return self._write(name, lambda c: c.batch(steps))

    def _step(self, op: WriteOperation, version_key: str | None = None
              ) -> Callable[[Collection], Any]:
        """What one write operation does to a collection."""
        if isinstance(op, UpsertPoints):
            self._check_count(len(op.ids), "points")

            def upsert(c: Collection) -> int:
                primary, side = split_points(c.config, op.vectors, self._documents)
                return c.upsert(op.ids, primary, op.payloads, version_key, side,
                                op.update_filter, op.update_mode, self._filter_limits)

            return upsert
        if isinstance(op, UpdateVectors):
            self._check_count(len(op.ids), "points")

            def update(c: Collection) -> None:
                given = [v if isinstance(v, dict) else {"": v} for v in op.vectors]
                c.update_vectors(op.ids, [{n: self._documents.document(v, c.config, n)
                                           if isinstance(v, Document) else v
                                           for n, v in g.items()} for g in given])

            return update
        selector = op.selector
        self._check_selector(selector)
        if isinstance(op, DeletePoints):
            return lambda c: c.delete(ids=selector.ids, filter=selector.filter,
                                      filter_limits=self._filter_limits)
        if isinstance(op, SetPayload):
            return lambda c: c.set_payload(self._select(c, selector), op.payload, op.overwrite)
        if isinstance(op, DeletePayload):
            return lambda c: c.delete_payload(self._select(c, selector), op.keys)
        if isinstance(op, ClearPayload):
            return lambda c: c.clear_payload(self._select(c, selector))
        return lambda c: c.delete_vectors(self._select(c, selector), op.names)

    def delete(self, name: str, selector: PointSelector) -> int:
        return self._write(name, self._step(DeletePoints(selector)))  # type: ignore[no-any-return]

    def set_payload(self, name: str, selector: PointSelector, payload: dict[str, Any],
                    overwrite: bool = False) -> None:
        self._write(name, self._step(SetPayload(selector, payload, overwrite)))

    def delete_payload(self, name: str, selector: PointSelector, keys: Sequence[str]) -> None:
        self._write(name, self._step(DeletePayload(selector, keys)))

    def clear_payload(self, name: str, selector: PointSelector) -> None:
        self._write(name, self._step(ClearPayload(selector)))

    def _check_selector(self, selector: PointSelector) -> None:
        if (selector.ids is None) == (selector.filter is None):
            raise InvalidInputError("select points with exactly one of 'points' or 'filter'")
        if selector.ids is not None:
            self._check_count(len(selector.ids), "point ids")

    def _select(self, collection: Collection, selector: PointSelector) -> list[PointId]:
        """The ids a selector names, resolved before the write that uses them (a point
        inserted in between is not selected)."""
        if selector.ids is not None:
            return list(selector.ids)
        return collection.ids_matching(selector.filter, self._filter_limits)

    # -- reads ---------------------------------------------------------------------------
    @property
    def caches_reads(self) -> bool:
        """Whether ``cached`` uses its key (callers skip building one otherwise)."""
        return self._cache.enabled

    def cached(self, name: str, key: bytes, compute: Callable[[], bytes]) -> tuple[bytes, bool]:
        """(encoded result, whether it came from the cache); any write to the collection
        makes earlier entries stale.

        Entries belong to the collection ``name`` resolves to, so moving an alias
        never serves the other collection's results; a result computed while an
        alias moved is not kept (``compute`` may have read either collection).
        """
        aliases = self._db.alias_version  # before resolving: see AliasTable.version
        target = self._collection(name).name  # a missing collection is an error either way
        if not self._cache.enabled:
            return compute(), False
        version = self.version(target)  # read before computing: see ResultCache
        hit = self._cache.get(target, key, version)
        if hit is not None:
            return hit, True
        value = compute()
        if self._db.alias_version == aliases:
            self._cache.put(target, key, version, value)
        return value, False

    def cache_stats(self) -> CacheStats:
        return self._cache.stats()

    def retrieve(self, name: str, ids: Sequence[PointId], with_payload: WithPayload = True,
                 with_vector: bool | Sequence[str] = False) -> list[Record]:
        self._check_count(len(ids), "point ids")
        return self._collection(name).retrieve(list(ids), with_payload, with_vector)

    def scroll(self, name: str, filter: dict[str, Any] | None = None, limit: int = 10,
               offset: PointId | None = None, with_payload: WithPayload = True,
               with_vector: bool | Sequence[str] = False) -> tuple[list[Record], PointId | None]:
        self._check_read(ReadOptions(limit=limit, with_payload=with_payload))
        return self._collection(name).scroll(filter, limit, offset, with_payload,
                                             with_vector, self._filter_limits)

    def scroll_ordered(self, name: str, key: str, descending: bool = False,
                       start_from: float | None = None, filter: dict[str, Any] | None = None,
                       limit: int = 10, with_payload: WithPayload = True,
                       with_vector: bool | Sequence[str] = False) -> list[Record]:
        """Points in the order of a numeric payload field (no page token: the next
        page starts from the last ``order_value``)."""
        self._check_read(ReadOptions(limit=limit, with_payload=with_payload))
        return self._collection(name).scroll_ordered(key, descending, start_from, filter,
                                                     limit, with_payload, with_vector,
                                                     self._filter_limits)

    def count(self, name: str, filter: dict[str, Any] | None = None) -> int:
        return self._collection(name).count(filter, self._filter_limits)

    def facet(self, name: str, key: str, filter: dict[str, Any] | None = None,
              limit: int = 10) -> list[tuple[Any, int]]:
        """The most frequent values of an indexed payload field, with their counts."""
        self._check_read(ReadOptions(limit=limit))
        return self._timed(name, "facet",
                           lambda c: c.facet(key, filter, limit, self._filter_limits))

    def search(self, name: str, vector: Any, options: ReadOptions) -> list[Hit]:
        self._check_read(options)
        return self._timed(name, "search", lambda c: self._exec.search(c, vector, options))

    def search_batch(self, name: str, searches: Sequence[tuple[Any, ReadOptions]]
                     ) -> list[list[Hit]]:
        self._check_batch([options for _, options in searches])
        return self._timed(name, "search_batch", lambda c: [
            self._exec.search(c, vector, options) for vector, options in searches])

    def recommend(self, name: str, query: RecommendQuery, options: ReadOptions) -> list[Hit]:
        self._check_read(options)
        return self._timed(name, "recommend", lambda c: self._exec.query(c, query, options))

    def query(self, name: str, query: Query, options: ReadOptions,
              prefetch: Sequence[Prefetch] = ()) -> list[Hit]:
        """Qdrant's universal query: nearest (vector or point id, optionally MMR),
        recommend, a random sample, or with no query the points in id order
        (score 0); over ``prefetch`` stages, fusion too (``universal.py``)."""
        self._check_read(options)
        check_prefetch(prefetch, self.settings.max_limit, self.settings.max_ef)
        return self._timed(name, "query", lambda c: self._exec.staged(c, query, options, prefetch))

    def query_batch(self, name: str,
                    queries: Sequence[tuple[Query, ReadOptions, Sequence[Prefetch]]]
                    ) -> list[list[Hit]]:
        self._check_batch([options for _, options, _ in queries])
        for _, _, prefetch in queries:
            check_prefetch(prefetch, self.settings.max_limit, self.settings.max_ef)
        return self._timed(name, "query_batch", lambda c: [
            self._exec.staged(c, query, options, prefetch) for query, options, prefetch in queries])

    def search_groups(self, name: str, vector: Any, options: ReadOptions,
                      spec: GroupSpec) -> list[Group]:
        """The best groups of nearest points by a payload field (``groups.py``)."""
        return self._grouped(name, "search_groups", options, spec,
                             lambda c, o: self._exec.search(c, vector, o))

    def query_groups(self, name: str, query: Query, options: ReadOptions,
                     spec: GroupSpec, prefetch: Sequence[Prefetch] = ()) -> list[Group]:
        check_prefetch(prefetch, self.settings.max_limit, self.settings.max_ef)
        return self._grouped(name, "query_groups", options, spec,
                             lambda c, o: self._exec.staged(c, query, o, prefetch))

    def distance_matrix(self, name: str, sample: int = 10, limit: int = 3,
                        filter: dict[str, Any] | None = None,
                        using: str | None = None) -> DistanceMatrix:
        """``sample`` random points the filter selects, each with its ``limit``
        nearest among them (``matrix.py``), by the primary vector."""
        if sample < 2 or limit < 1:
            raise InvalidInputError("sample must be at least 2 and limit positive")
        if sample > MAX_SAMPLE:
            raise InvalidInputError(f"sample is at most {MAX_SAMPLE}")
        self._check_read(ReadOptions(limit=limit))

        def read(c: Collection) -> DistanceMatrix:
            if using is not None and c.config.vector_kind(using) != "primary":
                raise InvalidInputError(f"the distance matrix is computed on the primary "
                                        f"vector {c.config.vector_name!r}, not {using!r}")
            flt: dict[str, Any] | None
            if c.config.vector_name:  # the points that have a (named) primary vector
                having: dict[str, Any] = {"has_vector": c.config.vector_name}
                flt = {"must": [having] if filter is None else [filter, having]}
            else:
                flt = filter
            ids = c.ids_matching(flt, self._filter_limits)
            if len(ids) > sample:
                picked = np.random.default_rng().choice(len(ids), sample, replace=False)
                ids = [ids[i] for i in np.sort(picked).tolist()]
            # One read for the vectors: a point deleted since the ids were read drops out.
            primary = [c.config.vector_name] if c.config.has_side_vectors else True
            found = [r for r in c.retrieve(ids, with_payload=False, with_vectors=primary)
                     if not isinstance(r.vector, dict) or c.config.vector_name in r.vector]
            vectors = np.asarray([r.vector[c.config.vector_name] if isinstance(r.vector, dict)
                                  else r.vector for r in found], dtype=np.float32).reshape(
                len(found), c.config.dim)
            return nearest_within([r.id for r in found], vectors, c.config.metric, limit)

        return self._timed(name, "matrix", read)

    def _grouped(self, name: str, operation: str, options: ReadOptions, spec: GroupSpec,
                 search: Callable[[Collection, ReadOptions], list[Hit]]) -> list[Group]:
        check_spec(spec, self.settings.max_limit)
        self._check_read(dataclasses.replace(options, limit=spec.limit))
        lookup = spec.lookup
        into = self._collection(lookup.collection) if lookup is not None else None
        groups = self._timed(name, operation, lambda c: grouped(
            lambda o: search(c, o), options, spec, self.settings.max_limit))
        if into is None or lookup is None or not groups:
            return groups
        canonical: dict[str | int, PointId] = {}
        for g in groups:  # a value that is no point id looks up nothing
            with contextlib.suppress(InvalidPointIdError):
                canonical[g.id] = decode_key(encode_id(g.id))
        found = {r.id: r for r in into.retrieve(list(canonical.values()), lookup.with_payload,
                                                lookup.with_vector)}
        return [dataclasses.replace(g, lookup=found.get(canonical.get(g.id, -1)))
                for g in groups]

    def _timed(self, name: str, operation: str, read: Callable[[Collection], T]) -> T:
        """A search-like read, its engine time in the search histogram (no context
        manager: this is every search's path)."""
        collection = self._collection(name)
        started = time.perf_counter()
        result = read(collection)
        if self._metrics is not None:
            self._metrics.observe_search(collection.name, operation,
                                         time.perf_counter() - started)
        return result

    def _check_batch(self, batch: Sequence[ReadOptions]) -> None:
        self._check_count(len(batch), "searches")
        for options in batch:
            self._check_read(options)
        total = sum(o.limit + o.offset for o in batch)
        cap = 10 * self.settings.max_limit
        if total > cap:
            raise InvalidInputError(f"the searches of one batch ask for {total} results in "
                                    f"all, the limit is {cap} (10 x max_limit)")



