"""Collection snapshots: a tar of config, manifest, segments and WAL, plus a file list.

Creating one blocks writes only while files are hard-linked (segment files are
immutable; tombstones and the manifest are replaced by rename, so a link keeps
the version of that instant) and the WAL is copied; the tar is written
afterwards. ``snapshot.json`` lists every file with its size and CRC-32.

A snapshot is untrusted input when it comes back (an upload, a URL, a file
that sat on a disk): ``unpack_checked`` extracts it into a staging directory
and checks it completely before anything is replaced. The file list must
match exactly; the config must parse; the collection must open in strict mode
(every listed segment present and self-consistent, every WAL record whole,
of a known kind and of the collection's dimension); the WAL must reach the
sequence number the snapshot recorded. Any failure is an InvalidSnapshotError
and the staging directory is removed.
"""

from __future__ import annotations

import lzma
import os
import shutil
import struct
import tarfile
import uuid
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from peregrine.core.errors import PeregrineError
from peregrine.core.fsio import write_atomic
from peregrine.vector.collection.holder import SegmentHolder
from peregrine.vector.collection.manifest import CONFIG_FILE
from peregrine.vector.collection.optimizer import Optimizer
from peregrine.vector.errors import InvalidSnapshotError
from peregrine.vector.types import CollectionConfig

CONTENTS = "snapshot.json"
FORMAT = 1
_CHUNK = 1 << 20
# An archive may not unpack to more than this many times its own size (GNU
# sparse members or a compression bomb could otherwise fill the disk from a
# small upload), nor hold more files than any collection has (each segment is
# a dozen).
_MAX_EXPANSION = 10
_MAX_MEMBERS = 20_000
# What reading a damaged archive or its contents may raise: all of it means
# "not a valid snapshot".
_UNTRUSTED_ERRORS = (PeregrineError, OSError, ValueError, EOFError, tarfile.TarError,
                     lzma.LZMAError, zlib.error, struct.error)


def create_snapshot(holder: SegmentHolder, optimizer: Optimizer, path: Path) -> Path:
    staging = holder.directory.parent / f".snapshot-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        with optimizer.paused(), holder.writes_paused():
            holder.wal.sync()
            wal_last_seq = holder.wal.last_seq
            for item in holder.durable_files():
                target = staging / item.relative
                target.parent.mkdir(parents=True, exist_ok=True)
                if item.link:
                    os.link(item.path, target)
                else:
                    shutil.copy2(item.path, target)
        files = {str(p.relative_to(staging)): _describe(p)
                 for p in sorted(staging.rglob("*")) if p.is_file()}
        contents = {"format": FORMAT, "wal_last_seq": wal_last_seq, "files": files}
        (staging / CONTENTS).write_bytes(orjson.dumps(contents))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with tarfile.open(tmp, "w") as tar:
                for entry in sorted(staging.rglob("*")):
                    tar.add(entry, arcname=str(entry.relative_to(staging)), recursive=False)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _describe(path: Path) -> dict[str, int]:
    crc = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return {"size": path.stat().st_size, "crc32": crc}


def unpack_checked(path: Path, staging: Path, name: str, fsync: str = "group"
                   ) -> CollectionConfig:
    """Unpack a snapshot into ``staging`` (new) as collection ``name`` and check it
    opens; returns its config. On any failure ``staging`` is gone."""
    try:
        config, wal_last_seq = _unpack(path, staging, name)
        _open_strict(staging, config, fsync, wal_last_seq)
        return config
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, InvalidSnapshotError):
            raise
        if isinstance(exc, _UNTRUSTED_ERRORS):
            # Name files inside the snapshot, never where the server keeps them.
            reason = str(exc).replace(f"{staging}/", "").replace(str(staging), "snapshot")
            raise InvalidSnapshotError(
                f"this is not a valid collection snapshot: {reason}") from None
        raise


def _unpack(path: Path, staging: Path, name: str) -> tuple[CollectionConfig, int | None]:
    """Extract, check the file list, rename; returns the config and the WAL position
    the snapshot recorded (None for snapshots without a file list)."""
    if not path.is_file():
        raise InvalidSnapshotError("the snapshot file does not exist")
    limit = _MAX_EXPANSION * path.stat().st_size + (1 << 20)
    with tarfile.open(path, "r") as tar:
        members = _checked_members(tar, limit)
        tar.extractall(staging, members=members, filter="data")
    contents = _read_contents(staging)
    wal_last_seq = None
    if contents is not None:
        _check_files(staging, contents["files"])
        wal_last_seq = int(contents["wal_last_seq"])
    config_path = staging / CONFIG_FILE
    if not config_path.is_file():
        raise InvalidSnapshotError(f"the snapshot holds no {CONFIG_FILE}")
    config = CollectionConfig.from_dict(orjson.loads(config_path.read_bytes()))
    config = config.replace(name=name)
    write_atomic(config_path, orjson.dumps(config.to_dict()))
    return config, wal_last_seq


def _checked_members(tar: tarfile.TarFile, limit: int) -> list[tarfile.TarInfo]:
    """The archive's members, refused unless each is a plain file or directory at a
    plain relative path, and all together are a reasonable number and size.

    A snapshot holds nothing else, so links and device files are refused
    outright rather than left to the extraction filter (which older Pythons
    let a chain of symlinks get past).
    """
    members = []
    total = 0
    for member in tar:
        members.append(member)
        if len(members) > _MAX_MEMBERS:
            raise InvalidSnapshotError(f"the snapshot holds more than {_MAX_MEMBERS} files")
        name = PurePosixPath(member.name)
        if not (member.isfile() or member.isdir()) or name.is_absolute() \
                or any(part in ("..", "") for part in name.parts) or "\\" in member.name:
            raise InvalidSnapshotError(
                f"the snapshot holds {member.name!r}, which is not a plain file or directory")
        total += member.size
        if total > limit:
            raise InvalidSnapshotError("the snapshot unpacks to more than its own size allows")
    return members


def _read_contents(staging: Path) -> dict[str, Any] | None:
    """The snapshot's file list (snapshots made before it existed have none)."""
    listing = staging / CONTENTS
    if not listing.exists():
        return None
    contents = orjson.loads(listing.read_bytes())
    if not isinstance(contents, dict) or contents.get("format") != FORMAT \
            or not isinstance(contents.get("files"), dict) \
            or not isinstance(contents.get("wal_last_seq"), int):
        raise InvalidSnapshotError(f"{CONTENTS} is not a snapshot file list")
    listing.unlink()
    return contents


def _check_files(staging: Path, listed: dict[str, Any]) -> None:
    present = {str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file()}
    if present != set(listed):
        extra, missing = sorted(present - set(listed)), sorted(set(listed) - present)
        raise InvalidSnapshotError(
            f"files differ from the snapshot's list (unexpected: {extra[:3]}, "
            f"missing: {missing[:3]})")
    for relative, expected in listed.items():
        if not isinstance(expected, dict) or _describe(staging / relative) != expected:
            raise InvalidSnapshotError(f"{relative} is damaged (size or CRC differs)")


def _open_strict(staging: Path, config: CollectionConfig, fsync: str,
                 wal_last_seq: int | None) -> None:
    holder = SegmentHolder(staging, config, fsync, strict=True)
    try:
        if wal_last_seq is not None and holder.wal.last_seq != wal_last_seq:
            raise InvalidSnapshotError(
                f"the WAL ends at record {holder.wal.last_seq}, the snapshot was taken at "
                f"{wal_last_seq}")
    finally:
        holder.close()
