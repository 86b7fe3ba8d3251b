"""The snapshot part of the vector face's front door (``VectorService`` inherits
it; kept apart for size): a collection's named snapshots, storage snapshots of
every collection at once, and recovery from a URL, an upload or (for a whole
storage snapshot) a local archive.

Snapshots belong to the collection: through an alias they are its target's.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import uuid
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson

from peregrine.core.errors import InvalidInputError, PeregrineError, StorageError
from peregrine.vector.collection.collection import Collection
from peregrine.vector.collection.database import Database
from peregrine.vector.collection.snapshot import unpack_checked
from peregrine.vector.collection.snapshot_store import SnapshotInfo, SnapshotStore
from peregrine.vector.errors import InvalidSnapshotError, SnapshotNotFoundError
from peregrine.vector.result_cache import ResultCache
from peregrine.vector.settings import VectorSettings
from peregrine.vector.types import CreateAlias, DeleteAlias, validate_collection_name

log = logging.getLogger(__name__)

ALIASES_MEMBER = "aliases.json"  # a storage snapshot's alias list
_SUFFIX = ".snapshot"
_CHUNK = 1 << 20
_MAX_ALIASES_BYTES = 64 << 20  # read whole into memory: far above any real alias list


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
        one after another) and ``aliases.json``. ``recover_full_snapshot`` recovers
        it whole; any collection in it also recovers on its own through the
        collection snapshot API."""
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
            aliases = staging / ALIASES_MEMBER
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

    def recover_full_snapshot(self, archive: str | Path, force: bool = False) -> list[str]:
        """Recover every collection and alias of a storage snapshot (the archive
        ``create_full_snapshot`` writes); returns the collections recovered, by name.

        As Qdrant's ``--storage-snapshot`` at start: a collection or alias of the
        archive that already exists is refused unless ``force``, which replaces
        the collection (an alias of that name is dropped) and re-points the
        alias; collections and aliases the archive does not name are kept. An
        archive alias may never take an existing collection's name.

        Everything is checked before anything changes: the archive's members
        (plain files of safe names, within ``max_snapshot_bytes``), its alias
        list, the names against the storage, and each collection snapshot,
        unpacked and opened completely (one extra unpack per collection, the
        price of "a damaged archive changes nothing"). Only a failure of the
        storage itself part-way (a full disk) can leave some collections
        recovered; the log names them.
        """
        # In the uploads' area: swept at the next start if this process dies here.
        work = self._snapshots.temp_path().with_suffix(".parts")
        work.mkdir()
        try:
            unpacked = _unpack_storage_archive(Path(archive), work,
                                               self.settings.max_snapshot_bytes)
            plan = self._plan_recovery(unpacked, force)
            _check_collection_snapshots(unpacked, work)
            self._apply_recovery(unpacked, plan)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return sorted(unpacked.snapshots)

    def _plan_recovery(self, unpacked: _StorageArchive, force: bool) -> _RecoveryPlan:
        """The alias changes a recovery makes, once its names are checked against the
        storage (InvalidInputError, nothing changed, on a conflict)."""
        collections = set(self._db.list_collections())
        aliases = dict(self._db.aliases())
        names = set(unpacked.snapshots)
        taken = sorted(names & (collections | set(aliases)))
        if taken and not force:
            raise InvalidInputError(
                f"storage snapshot: collections or aliases named {_listed(taken)} already "
                "exist (recover with force, `--force-snapshot`, to replace them)")
        shadowing = sorted(a for a, _ in unpacked.aliases if a in collections)
        if shadowing:
            raise InvalidInputError(
                f"storage snapshot: aliases {_listed(shadowing)} have the names of existing "
                "collections that the archive does not replace (drop those collections first)")
        repointed = sorted(a for a, _ in unpacked.aliases if a in aliases)
        if repointed and not force:
            raise InvalidInputError(
                f"storage snapshot: aliases {_listed(repointed)} already exist (recover with "
                "force, `--force-snapshot`, to re-point them)")
        plan = _RecoveryPlan(drop=[DeleteAlias(n) for n in taken if n in aliases])
        for alias, target in unpacked.aliases:
            if target in names or target in collections:
                plan.create.append(CreateAlias(alias, target))
            else:  # as the alias table does when it loads one
                log.warning("storage snapshot: alias %r skipped: its collection %r is "
                            "neither in the archive nor in the storage", alias, target)
        return plan

    def _apply_recovery(self, unpacked: _StorageArchive, plan: _RecoveryPlan) -> None:
        """Drop the aliases the archive's collections replace, restore each collection,
        then create the archive's aliases in one write (they need their collections)."""
        done: list[str] = []
        try:
            if plan.drop:
                self._db.update_aliases(plan.drop)
            for name, local in sorted(unpacked.snapshots.items()):
                self._restore_from(name, local)
                done.append(name)
            if plan.create:
                self._db.update_aliases(plan.create)
        except BaseException:
            log.error("storage snapshot recovery stopped part-way; recovered so far: %s",
                      ", ".join(done) or "none")
            raise

    def _restore_from(self, name: str, local: Path) -> None:
        """Put collection ``name`` (not an alias's target) in place from a checked
        snapshot, freeing its unpacked copy at once."""
        try:
            self._db.restore_collection(local, name)
        finally:
            local.unlink(missing_ok=True)
            self._bump(name)
            self._cache.drop_collection(name)


@dataclass(frozen=True, slots=True)
class _StorageArchive:
    """A storage snapshot unpacked into a work directory and checked as a whole."""

    snapshots: dict[str, Path]  # collection -> its collection snapshot, unpacked
    aliases: list[tuple[str, str]]  # (alias, collection)


@dataclass(slots=True)
class _RecoveryPlan:
    drop: list[DeleteAlias] = field(default_factory=list)  # aliases a collection replaces
    create: list[CreateAlias] = field(default_factory=list)


def _listed(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _unpack_storage_archive(archive: Path, work: Path, max_bytes: int) -> _StorageArchive:
    """Check a storage snapshot's members and copy them into ``work``. Refused
    whole (InvalidSnapshotError) unless it is a complete, uncompressed tar of
    ``<collection>.snapshot`` files and one ``aliases.json`` within ``max_bytes``."""
    if not archive.is_file():
        raise SnapshotNotFoundError(f"storage snapshot {archive} does not exist or is not a file")
    try:
        return _unpack(archive, work, max_bytes)
    except InvalidSnapshotError as exc:
        raise InvalidSnapshotError(f"storage snapshot {archive}: {exc}") from None


def _unpack(archive: Path, work: Path, max_bytes: int) -> _StorageArchive:
    try:
        if archive.stat().st_size > max_bytes:
            raise InvalidSnapshotError(f"larger than {max_bytes} bytes "
                                       "(vector.max_snapshot_bytes)")
        handle = archive.open("rb")
    except OSError as exc:
        raise InvalidSnapshotError(f"cannot be read: {exc.strerror or exc}") from None
    snapshots: dict[str, Path] = {}
    aliases = work / ALIASES_MEMBER
    try:
        with handle, tarfile.open(fileobj=handle, mode="r:") as tar:
            members = _storage_members(tar, max_bytes)
            if members:
                _check_end_marker(handle, members[-1][0])
            if all(collection is not None for _, collection in members):
                raise InvalidSnapshotError(
                    f"the archive holds no {ALIASES_MEMBER}: not a storage snapshot (a "
                    "collection snapshot recovers through the collection snapshot API)")
            for index, (member, collection) in enumerate(members):
                target = aliases if collection is None else work / f"{index}{_SUFFIX}"
                _copy_member(tar, member, target)
                if collection is not None:
                    snapshots[collection] = target
    except tarfile.TarError as exc:
        raise InvalidSnapshotError(f"not an uncompressed tar archive ({exc})") from None
    except OSError as exc:  # the archive opened; so this is the work directory's disk
        raise StorageError(f"cannot unpack storage snapshot {archive}: "
                           f"{exc.strerror or exc}") from None
    return _StorageArchive(snapshots, _read_aliases(aliases, snapshots))


def _storage_members(tar: tarfile.TarFile, max_bytes: int
                     ) -> list[tuple[tarfile.TarInfo, str | None]]:
    """Each member with the collection it holds (None: the alias list), refused
    unless all are plain top-level files, named once each, within ``max_bytes``.
    Only the headers are read (a tar lists each member before its data)."""
    members: list[tuple[tarfile.TarInfo, str | None]] = []
    seen: set[str] = set()
    total = 0
    for member in tar:
        collection = _member_collection(member)
        if member.name in seen:
            raise InvalidSnapshotError(f"the archive holds {member.name!r} twice")
        seen.add(member.name)
        total += member.size
        if total > max_bytes:
            raise InvalidSnapshotError(f"the archive unpacks to more than {max_bytes} bytes "
                                       "(vector.max_snapshot_bytes)")
        if collection is None and member.size > _MAX_ALIASES_BYTES:
            raise InvalidSnapshotError(f"its {ALIASES_MEMBER} is larger than "
                                       f"{_MAX_ALIASES_BYTES} bytes")
        members.append((member, collection))
    return members


def _member_collection(member: tarfile.TarInfo) -> str | None:
    """The collection a member holds, None for the alias list; refuses every other
    member: a path (``../evil``, ``a/b``, absolute), a link, directory or device."""
    name = member.name
    if "/" in name or "\\" in name or name in ("", ".", ".."):
        raise InvalidSnapshotError(
            f"the archive holds {name!r}: a storage snapshot holds files at its top level only")
    if not member.isreg() or member.issparse():
        raise InvalidSnapshotError(
            f"the archive holds {name!r}, which is not a plain file (links, directories and "
            "devices are refused)")
    if name == ALIASES_MEMBER:
        return None
    if not name.endswith(_SUFFIX):
        raise InvalidSnapshotError(
            f"the archive holds {name!r}: a storage snapshot holds only <collection>{_SUFFIX} "
            f"files and {ALIASES_MEMBER}")
    try:
        return validate_collection_name(name[:-len(_SUFFIX)])
    except InvalidInputError as exc:
        raise InvalidSnapshotError(f"the archive holds {name!r}: {exc}") from None


def _check_end_marker(handle: IO[bytes], last: tarfile.TarInfo) -> None:
    """Refuse a truncated archive: a cut that falls between members (or inside a
    header) reads as a shorter, valid one, but loses the zero block that ends it."""
    end = last.offset_data + -(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    handle.seek(end)
    if handle.read(tarfile.BLOCKSIZE) != bytes(tarfile.BLOCKSIZE):
        raise InvalidSnapshotError("the archive is truncated (it does not end where a tar "
                                   "ends)")


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    """Copy one member's bytes (never extract: no name or mode of the archive's is used)."""
    source = tar.extractfile(member)
    if source is None:  # not a regular file: _member_collection refused those
        raise InvalidSnapshotError(f"the archive's {member.name!r} cannot be read")
    written = 0
    with source, target.open("wb") as out:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            out.write(chunk)
    if written != member.size:
        raise InvalidSnapshotError(f"the archive is truncated inside {member.name!r}")


def _read_aliases(path: Path, collections: Container[str]) -> list[tuple[str, str]]:
    """The (alias, collection) pairs of ``aliases.json``: a list of
    ``{"alias_name", "collection_name"}`` objects of valid, distinct alias names,
    none of them a collection of the archive (aliases and collections share names)."""
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise InvalidSnapshotError(f"its {ALIASES_MEMBER} is not JSON: {exc}") from None
    shape = (f"its {ALIASES_MEMBER} must be a list of "
             '{"alias_name": ..., "collection_name": ...} objects')
    if not isinstance(data, list):
        raise InvalidSnapshotError(shape)
    pairs: list[tuple[str, str]] = []
    for entry in data:
        if not isinstance(entry, dict):
            raise InvalidSnapshotError(shape)
        try:
            alias = validate_collection_name(entry.get("alias_name"), "alias")
            target = validate_collection_name(entry.get("collection_name"))
        except InvalidInputError as exc:
            raise InvalidSnapshotError(f"its {ALIASES_MEMBER}: {exc}") from None
        if alias in collections:
            raise InvalidSnapshotError(f"its {ALIASES_MEMBER} names alias {alias!r}, which is "
                                       "also a collection of the archive")
        if any(alias == a for a, _ in pairs):
            raise InvalidSnapshotError(f"its {ALIASES_MEMBER} names alias {alias!r} twice")
        pairs.append((alias, target))
    return pairs


def _check_collection_snapshots(unpacked: _StorageArchive, work: Path) -> None:
    """Unpack and open each collection snapshot in a throwaway directory, so that a
    damaged one is found before any collection is replaced."""
    for name, local in sorted(unpacked.snapshots.items()):
        staging = work / f"check-{uuid.uuid4().hex}"
        try:
            unpack_checked(local, staging, name, "never")
        except InvalidSnapshotError as exc:
            raise InvalidSnapshotError(f"storage snapshot: its {name}{_SUFFIX} does not load: "
                                       f"{exc}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
