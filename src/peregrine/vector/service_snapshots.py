"""The snapshot part of the vector face's front door (``VectorService`` inherits
it; kept apart for size): a collection's named snapshots, storage snapshots of
every collection at once, and recovery from a URL or an upload.

Snapshots belong to the collection: through an alias they are its target's.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import orjson

from peregrine.core.errors import PeregrineError
from peregrine.vector.collection.collection import Collection
from peregrine.vector.collection.database import Database
from peregrine.vector.collection.snapshot_store import SnapshotInfo, SnapshotStore
from peregrine.vector.result_cache import ResultCache
from peregrine.vector.settings import VectorSettings


class SnapshotDoor:
    """Snapshot methods of ``VectorService`` (see the module docstring)."""

    _db: Database
    _snapshots: SnapshotStore
    _cache: ResultCache
    settings: VectorSettings

    def _collection(self, name: str) -> Collection:
        raise NotImplementedError

    def _resolve(self, name: str) -> str:
        raise NotImplementedError

    def _bump(self, name: str) -> None:
        raise NotImplementedError

    def create_snapshot(self, name: str) -> SnapshotInfo:
        collection = self._collection(name)
        path = collection.snapshot(self._snapshots.new_path(collection.name))
        return self._snapshots.register(path)

    def list_snapshots(self, name: str) -> list[SnapshotInfo]:
        return self._snapshots.list(self._collection(name).name)

    def snapshot_path(self, name: str, snapshot: str) -> Path:
        return self._snapshots.path(self._resolve(name), snapshot)

    def delete_snapshot(self, name: str, snapshot: str) -> None:
        self._snapshots.delete(self._resolve(name), snapshot)

    # Storage snapshots: every collection and the aliases, in one archive.
    def create_full_snapshot(self) -> SnapshotInfo:
        """A tar of one snapshot per collection (each consistent on its own, taken
        one after another) and ``aliases.json``. Any collection in it can be
        recovered on its own through the collection snapshot API."""
        path = self._snapshots.new_path(None)
        staging = path.parent / f".{path.name}.parts"
        staging.mkdir()
        try:
            members = []
            for name in self._db.list_collections():
                try:
                    collection = self._db.collection(name)
                except PeregrineError:  # dropped meanwhile
                    continue
                members.append(collection.snapshot(staging / f"{name}.snapshot"))
            aliases = staging / "aliases.json"
            aliases.write_bytes(orjson.dumps(
                [{"alias_name": a, "collection_name": c} for a, c in self._db.aliases()]))
            partial = path.with_name(path.name + ".partial")
            with tarfile.open(partial, "w") as tar:
                for member in [*members, aliases]:
                    tar.add(member, arcname=member.name)
            partial.replace(path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self._snapshots.register(path)

    def list_full_snapshots(self) -> list[SnapshotInfo]:
        return self._snapshots.list(None)

    def full_snapshot_path(self, snapshot: str) -> Path:
        return self._snapshots.path(None, snapshot)

    def delete_full_snapshot(self, snapshot: str) -> None:
        self._snapshots.delete(None, snapshot)

    def upload_path(self) -> Path:
        """Where an upload may be written before ``recover_uploaded`` takes it."""
        return self._snapshots.temp_path()

    def discard_upload(self, upload: Path) -> None:
        self._snapshots.discard(upload)

    def recover_snapshot(self, name: str, location: str, checksum: str | None = None,
                         api_key: str | None = None) -> None:
        """Create or replace collection ``name`` from a snapshot at a file:// or
        http(s):// location (checked completely before anything is replaced). An
        alias's name replaces the collection it names."""
        local = self._snapshots.fetch(location, checksum, self.settings.max_snapshot_bytes,
                                     api_key)
        self._recover(name, local)

    def recover_uploaded(self, name: str, upload: Path, checksum: str | None = None) -> None:
        """Like ``recover_snapshot`` for a file written at ``upload_path()``."""
        try:
            self._snapshots.verify(upload, checksum)
        except BaseException:
            self._snapshots.discard(upload)
            raise
        self._recover(name, upload)

    def _recover(self, name: str, local: Path) -> None:
        name = self._resolve(name)
        try:
            self._db.restore_collection(local, name)
        finally:
            self._snapshots.discard(local)
            self._bump(name)
            self._cache.drop_collection(name)
