"""The database: a directory of collections, and the aliases that name them.

One process owns a database directory at a time (an advisory ``flock``), as
with any embedded store; a second opener gets a clear error instead of two
WAL writers corrupting each other.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from peregrine.core.errors import AlreadyExistsError, ClosedError, InvalidInputError, StorageError
from peregrine.core.fsio import write_atomic
from peregrine.vector.collection.aliases import ALIASES_FILE, AliasTable
from peregrine.vector.collection.collection import Collection
from peregrine.vector.collection.manifest import CONFIG_FILE
from peregrine.vector.collection.snapshot import unpack_checked
from peregrine.vector.collection.wal import FsyncPolicy
from peregrine.vector.errors import CollectionNotFoundError
from peregrine.vector.types import (
    AliasAction,
    CollectionConfig,
    DenseSpec,
    IndexConfig,
    Metric,
    SparseModifier,
    validate_collection_name,
    validate_vector_name,
)

FORMAT_VERSION = 1


class Database:
    def __init__(
        self,
        path: str | os.PathLike[str],
        fsync: str = "group",
        fsync_interval_ms: int = 50,
        background: bool = True,
    ) -> None:
        self.path = Path(path)
        self.fsync = FsyncPolicy.parse(fsync)
        if isinstance(fsync_interval_ms, bool) or not isinstance(fsync_interval_ms, int) \
                or fsync_interval_ms < 1:
            raise InvalidInputError("fsync_interval_ms must be a positive integer")
        self.fsync_interval_ms = fsync_interval_ms
        self._background = background
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.path / "LOCK", "a+")  # noqa: SIM115 - held while open
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise StorageError(f"database {self.path} is open in another process") from None
        try:
            self._open_catalogue()
        except BaseException:
            self._release_lock()
            raise

    def _open_catalogue(self) -> None:
        meta = self.path / "peregrine.json"
        if meta.exists():
            version = orjson.loads(meta.read_bytes()).get("format")
            if version != FORMAT_VERSION:
                raise StorageError(f"unsupported database format {version!r}")
        else:
            write_atomic(meta, orjson.dumps({"format": FORMAT_VERSION}))
        self._root = self.path / "collections"
        self._root.mkdir(exist_ok=True)
        self._mutex = threading.Lock()
        self._collections: dict[str, Collection] = {}
        self._closed = False
        try:
            for entry in sorted(self._root.iterdir()):
                if entry.name.startswith("."):
                    shutil.rmtree(entry, ignore_errors=True)  # interrupted drop/restore
                    continue
                config = self._read_config(entry)
                self._collections[config.name] = self._open_collection(entry, config)
            self._aliases = AliasTable.load(self.path / ALIASES_FILE, self._collections)
        except BaseException:
            for collection in self._collections.values():
                collection.close()
            raise

    @staticmethod
    def _read_config(directory: Path) -> CollectionConfig:
        try:
            data = orjson.loads((directory / CONFIG_FILE).read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise StorageError(f"collection directory {directory.name}: cannot read "
                               f"{CONFIG_FILE}: {exc}") from None
        config = CollectionConfig.from_dict(data)
        if config.name != directory.name:
            raise StorageError(f"collection directory {directory.name} holds the config of "
                               f"{config.name!r}")
        return config

    def _open_collection(self, directory: Path, config: CollectionConfig) -> Collection:
        return Collection(directory, config, self.fsync, self.fsync_interval_ms, self._background)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("database is closed")

    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str | Metric = "cosine",
        index: dict[str, Any] | IndexConfig | None = None,
        *,
        vector_name: str = "",
        dense: bool = True,
        named: dict[str, DenseSpec] | None = None,
        sparse: dict[str, SparseModifier] | None = None,
    ) -> Collection:
        """``vector_name`` names the primary dense vector (HNSW-indexed); ``named``
        dense and ``sparse`` vectors are searched exactly (``CollectionConfig``);
        ``dense=False``: sparse or named vectors only."""
        self._check_open()
        validate_collection_name(name)
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 65_536:
            raise InvalidInputError("dim must be an integer between 1 and 65536")
        if vector_name:
            validate_vector_name(vector_name)
        config = CollectionConfig(name, dim, Metric.parse(metric), IndexConfig.from_dict(index),
                                  vector_name=vector_name, dense=dense, named=dict(named or {}),
                                  sparse={k: SparseModifier(v) for k, v in (sparse or {}).items()})
        with self._mutex:
            if name in self._collections:
                raise AlreadyExistsError(f"collection {name!r} already exists")
            self._check_not_alias(name)
            directory = self._root / name
            staging = self._root / f".create-{uuid.uuid4().hex}"
            staging.mkdir()
            write_atomic(staging / CONFIG_FILE, orjson.dumps(config.to_dict()))
            os.replace(staging, directory)
            collection = self._open_collection(directory, config)
            self._collections[name] = collection
            return collection

    def collection(self, name: str) -> Collection:
        self._check_open()
        try:
            return self._collections[name]
        except KeyError:
            raise CollectionNotFoundError(f"collection {name!r} does not exist") from None

    def has_collection(self, name: str) -> bool:
        """Whether a collection (not an alias) has this name."""
        return name in self._collections

    def _check_not_alias(self, name: str) -> None:
        if name in self._aliases:
            raise InvalidInputError(f"{name!r} is an alias: a collection cannot take its "
                                    "name (delete or rename the alias first)")

    # -- aliases ---------------------------------------------------------------------
    def resolve(self, name: str) -> str:
        """The collection an alias names; any other name unchanged (no lock: the
        alias table is replaced whole, never changed in place)."""
        return self._aliases.resolve(name)

    @property
    def alias_version(self) -> int:
        """Changes whenever an alias may resolve differently (see ``AliasTable``)."""
        return self._aliases.version

    def aliases(self) -> list[tuple[str, str]]:
        """(alias, collection) pairs, by alias."""
        return self._aliases.items()

    def update_aliases(self, actions: Sequence[AliasAction]) -> None:
        """Apply alias actions in order: all of them, durably in one write, or none."""
        self._check_open()
        with self._mutex:
            self._aliases.apply(actions, self._collections)

    def list_collections(self) -> list[str]:
        self._check_open()
        return sorted(self._collections)

    def drop_collection(self, name: str) -> None:
        self._check_open()
        with self._mutex:
            collection = self.collection(name)
            self._aliases.drop_collection(name)
            collection.close()
            del self._collections[name]
            trash = self._root / f".drop-{uuid.uuid4().hex}"
            os.replace(collection.directory, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def restore_collection(self, snapshot: str | os.PathLike[str], name: str) -> Collection:
        """Create (or replace) collection ``name`` from a snapshot file.

        The snapshot is unpacked and opened in a staging directory (named with a
        leading dot, so an interrupted restore is swept away at the next open)
        and only a snapshot that loads completely takes the collection's place;
        otherwise InvalidSnapshotError is raised and nothing has changed.
        """
        self._check_open()
        validate_collection_name(name)
        self._check_not_alias(name)
        existing = self._collections.get(name)
        if existing is not None:
            existing.restore(Path(snapshot))
            return existing
        staging = self._root / f".restore-{uuid.uuid4().hex}"
        config = unpack_checked(Path(snapshot), staging, name, self.fsync)
        try:
            with self._mutex:
                if name in self._collections:  # created meanwhile: replace its contents
                    self._collections[name].restore(Path(snapshot))
                    return self._collections[name]
                self._check_not_alias(name)
                directory = self._root / name
                os.replace(staging, directory)
                collection = self._open_collection(directory, config)
                self._collections[name] = collection
                return collection
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for collection in self._collections.values():
            collection.close()
        self._release_lock()

    def _release_lock(self) -> None:
        if not self._lock_file.closed:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_database(
    path: str | os.PathLike[str], fsync: str = "group", fsync_interval_ms: int = 50,
    background: bool = True,
) -> Database:
    return Database(path, fsync=fsync, fsync_interval_ms=fsync_interval_ms, background=background)
