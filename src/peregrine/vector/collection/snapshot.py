"""Collection snapshots: a tar of segments, manifest, config and WAL.

Creating one blocks writes only while files are hard-linked (segment files are
immutable; tombstones and the manifest are replaced by rename, so a link keeps
the version of that instant) and the WAL is copied; the tar is written
afterwards. A restored snapshot recovers like a restart: sealed segments load
as they are and the WAL tail replays.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from peregrine.core.errors import InvalidInputError, InvalidSnapshotError
from peregrine.vector.collection.manifest import CONFIG_FILE, MANIFEST, write_atomic
from peregrine.vector.types import CollectionConfig

if TYPE_CHECKING:
    from peregrine.vector.collection.collection import Collection



def create_snapshot(c: Collection, path: Path) -> Path:
    staging = c.directory.parent / f".snapshot-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        with c.optimizer._lock, c._write_lock:
            c.wal.sync()
            os.link(c.directory / CONFIG_FILE, staging / CONFIG_FILE)
            if (c.directory / MANIFEST).exists():
                os.link(c.directory / MANIFEST, staging / MANIFEST)
            for seg_id in c.manifest.segments:
                src = c.directory / "segments" / str(seg_id)
                shutil.copytree(src, staging / "segments" / str(seg_id), copy_function=os.link)
            (staging / "wal").mkdir()
            for wal_file in c.wal.files():
                shutil.copy2(wal_file, staging / "wal" / wal_file.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tarfile.open(tmp, "w") as tar:
            for item in sorted(staging.rglob("*")):
                tar.add(item, arcname=str(item.relative_to(staging)), recursive=False)
        os.replace(tmp, path)
        return path
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def extract_snapshot(path: Path, target: Path) -> CollectionConfig:
    """Unpack a snapshot into ``target`` (which must not exist) and read its config."""
    if not path.is_file():
        raise InvalidInputError(f"snapshot {path} does not exist")
    try:
        with tarfile.open(path, "r") as tar:
            tar.extractall(target, filter="data")
        config = CollectionConfig.from_dict(orjson.loads((target / CONFIG_FILE).read_bytes()))
    except (tarfile.TarError, OSError, orjson.JSONDecodeError, KeyError, ValueError) as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise InvalidSnapshotError(
            f"{path.name} is not a valid collection snapshot: {exc}") from None
    return config


def restore_snapshot(c: Collection, path: Path) -> None:
    staging = c.directory.parent / f".restore-{uuid.uuid4().hex}"
    config = extract_snapshot(path, staging)
    config = CollectionConfig(c.name, config.dim, config.metric, config.index,
                              config.payload_indexes)
    write_atomic(staging / CONFIG_FILE, orjson.dumps(config.to_dict()))
    c.close()
    trash = c.directory.parent / f".trash-{uuid.uuid4().hex}"
    os.replace(c.directory, trash)
    os.replace(staging, c.directory)
    shutil.rmtree(trash, ignore_errors=True)
    c.config = config
    c._closed = False
    c._load()
