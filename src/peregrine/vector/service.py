"""The vector store as a server uses it: one database plus request-level features.

What lives here is not engine logic (that is in ``Collection``) nor HTTP (that
is in ``peregrine.api``): the per-collection write version that makes cached
results stale, recommendation by example, and named snapshots. Any front end
(REST, NATS, gRPC later) calls this and stays a translator.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from peregrine.core.errors import InvalidInputError, NotFoundError
from peregrine.vector.collection.collection import Collection
from peregrine.vector.collection.database import Database, open_database
from peregrine.vector.collection.snapshot_store import SnapshotInfo, SnapshotStore
from peregrine.vector.ids import PointId
from peregrine.vector.result_cache import CacheStats, ResultCache
from peregrine.vector.types import IndexConfig, Metric

T = TypeVar("T")
Example = PointId | np.ndarray


class PointNotFoundError(NotFoundError):
    """A point referenced by id (as a query or an example) does not exist."""


class VectorService:
    def __init__(self, db: Database, snapshots: SnapshotStore, cache: ResultCache) -> None:
        self.db = db
        self.snapshots = snapshots
        self.cache = cache
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def open(cls, data: str | Path, *, fsync: str = "group", cache_entries: int = 10_000,
             cache_bytes: int = 64 << 20, snapshots: str | Path | None = None) -> VectorService:
        data = Path(data)
        db = open_database(data, fsync=fsync)
        try:
            store = SnapshotStore(Path(snapshots) if snapshots else data / "snapshots")
        except BaseException:
            db.close()
            raise
        return cls(db, store, ResultCache(cache_entries, cache_bytes))

    def close(self) -> None:
        self.db.close()

    # -- collections -------------------------------------------------------------
    def collection(self, name: str) -> Collection:
        return self.db.collection(name)

    def list_collections(self) -> list[str]:
        return self.db.list_collections()

    def has_collection(self, name: str) -> bool:
        return self.db.has_collection(name)

    def create_collection(self, name: str, dim: int, metric: str | Metric,
                          index: IndexConfig | dict[str, Any] | None = None) -> Collection:
        collection = self.db.create_collection(name, dim, metric, index)
        self._bump(name)
        return collection

    def drop_collection(self, name: str) -> bool:
        """Returns False when there was nothing to drop (as Qdrant answers)."""
        if not self.db.has_collection(name):
            return False
        try:
            self.db.drop_collection(name)
        finally:
            self._bump(name)
            self.cache.drop_collection(name)
        return True

    # -- writes and cached reads -----------------------------------------------------
    def version(self, name: str) -> int:
        return self._versions.get(name, 0)

    def _bump(self, name: str) -> None:
        with self._lock:
            self._versions[name] = self._versions.get(name, 0) + 1

    def write(self, name: str, change: Callable[[Collection], T]) -> T:
        """Apply a change; cached reads of the collection are stale afterwards."""
        collection = self.db.collection(name)
        try:
            return change(collection)
        finally:
            self._bump(name)

    @property
    def caches_reads(self) -> bool:
        """Whether ``cached_read`` uses its key (callers skip building one otherwise)."""
        return self.cache.enabled

    def cached_read(self, name: str, key: bytes,
                    compute: Callable[[Collection], bytes]) -> tuple[bytes, bool]:
        """(encoded result, whether it came from the cache)."""
        collection = self.db.collection(name)
        if not self.cache.enabled:
            return compute(collection), False
        version = self.version(name)  # read before computing: see ResultCache
        hit = self.cache.get(name, key, version)
        if hit is not None:
            return hit, True
        value = compute(collection)
        self.cache.put(name, key, version, value)
        return value, False

    def cache_stats(self) -> CacheStats:
        return self.cache.stats()

    def select_ids(self, collection: Collection, points: Sequence[PointId] | None,
                   filter: dict[str, Any] | None) -> list[PointId]:
        """Ids named directly, or every id a filter matches (exactly one of the two).

        Resolved before the write that uses them: a point inserted in between is
        not selected.
        """
        if (points is None) == (filter is None):
            raise InvalidInputError("select points with exactly one of 'points' or 'filter'")
        if points is not None:
            return list(points)
        return collection.ids_matching(filter)

    def collection_info(self, name: str) -> dict[str, Any]:
        """``Collection.info()`` plus how many points carry each indexed field."""
        collection = self.db.collection(name)
        info = collection.info()
        info["indexed_points"] = {
            field: collection.count({"must_not": [{"is_empty": {"key": field}}]})
            for field in collection.config.payload_indexes
        }
        return info

    # -- queries by example --------------------------------------------------------------
    def vectors_of(self, collection: Collection, ids: Sequence[PointId]) -> np.ndarray:
        """Stored vectors of existing points, in order; a missing id is an error."""
        records = collection.retrieve(list(ids), with_payload=False, with_vectors=True)
        found = {r.id: r.vector for r in records}
        missing = [i for i in ids if i not in found]
        if missing:
            raise PointNotFoundError(f"no point with id {missing[0]!r} in collection "
                                     f"{collection.name!r}")
        return np.asarray([found[i] for i in ids], dtype=np.float32)

    def recommend_target(self, collection: Collection, positive: Sequence[Example],
                         negative: Sequence[Example]) -> tuple[np.ndarray, list[PointId]]:
        """Qdrant's ``average_vector`` strategy: avg(+) + (avg(+) - avg(-)).

        Returns the target and the example ids, which results must exclude.
        """
        if not positive:
            raise InvalidInputError("recommend needs at least one positive example")
        ids = [e for e in [*positive, *negative] if not isinstance(e, np.ndarray)]
        stored = dict(zip(ids, self.vectors_of(collection, ids), strict=True)) if ids else {}

        def resolve(examples: Sequence[Example]) -> np.ndarray:
            rows = [e if isinstance(e, np.ndarray) else stored[e] for e in examples]
            for row in rows:
                if row.shape != (collection.config.dim,):
                    raise InvalidInputError(
                        f"example vectors must have dimension {collection.config.dim}")
            mean: np.ndarray = np.mean(np.stack(rows), axis=0)
            return mean

        pos = resolve(positive)
        target: np.ndarray = 2 * pos - resolve(negative) if negative else pos
        return target.astype(np.float32), ids

    # -- snapshots --------------------------------------------------------------------
    def create_snapshot(self, name: str) -> SnapshotInfo:
        collection = self.db.collection(name)
        path = collection.snapshot(self.snapshots.new_path(name))
        return self.snapshots.register(path)

    def list_snapshots(self, name: str) -> list[SnapshotInfo]:
        self.db.collection(name)
        return self.snapshots.list(name)

    def recover_snapshot(self, name: str, path: Path) -> None:
        """Create or replace collection ``name`` from a local snapshot file."""
        try:
            self.db.restore_collection(path, name)
        finally:
            self._bump(name)
            self.cache.drop_collection(name)
