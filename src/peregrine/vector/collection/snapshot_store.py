"""Named snapshot files of collections, as Qdrant's snapshot API sees them.

Snapshots live under ``<data>/snapshots/<collection>/`` with a ``.checksum``
(SHA-256) beside each, so a download can be verified and a recovery can be
refused before anything is replaced.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from peregrine.core.errors import InvalidInputError, InvalidSnapshotError, NotFoundError
from peregrine.vector.types import validate_collection_name

_SNAPSHOT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,254}\.snapshot$")
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    name: str
    creation_time: str
    size: int
    checksum: str


class SnapshotNotFoundError(NotFoundError):
    """No snapshot of that name for that collection."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class SnapshotStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.incoming = root / ".incoming"
        shutil.rmtree(self.incoming, ignore_errors=True)  # leftovers of interrupted uploads
        self.incoming.mkdir()

    def directory(self, collection: str) -> Path:
        validate_collection_name(collection)
        return self.root / collection

    def new_path(self, collection: str) -> Path:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H-%M-%S-%f")
        return self.directory(collection) / f"{collection}-{stamp}.snapshot"

    def register(self, path: Path) -> SnapshotInfo:
        """Record the checksum of a freshly written snapshot file."""
        checksum = sha256_file(path)
        (path.parent / (path.name + ".checksum")).write_text(checksum)
        return self._info(path, checksum)

    def _info(self, path: Path, checksum: str | None = None) -> SnapshotInfo:
        stat = path.stat()
        if checksum is None:
            side = path.parent / (path.name + ".checksum")
            checksum = side.read_text().strip() if side.exists() else sha256_file(path)
        created = datetime.fromtimestamp(stat.st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return SnapshotInfo(path.name, created, stat.st_size, checksum)

    def list(self, collection: str) -> list[SnapshotInfo]:
        directory = self.directory(collection)
        if not directory.is_dir():
            return []
        return [self._info(p) for p in sorted(directory.glob("*.snapshot"))]

    def path(self, collection: str, name: str) -> Path:
        if not _SNAPSHOT_RE.match(name):
            raise InvalidInputError(f"invalid snapshot name {name!r}")
        path = self.directory(collection) / name
        if not path.is_file():
            raise SnapshotNotFoundError(
                f"snapshot {name!r} of collection {collection!r} does not exist")
        return path

    def delete(self, collection: str, name: str) -> None:
        path = self.path(collection, name)
        path.unlink()
        (path.parent / (name + ".checksum")).unlink(missing_ok=True)

    def fetch(self, location: str, checksum: str | None = None,
              max_bytes: int = 1 << 40, api_key: str | None = None) -> Path:
        """Resolve a recovery location to a local file (a temp copy for URLs).

        ``file://`` locations must lie inside the snapshot directory so that a
        client cannot make the server read arbitrary files.
        """
        parsed = urllib.parse.urlparse(location)
        if parsed.scheme == "file":
            path = Path(urllib.parse.unquote(parsed.path)).resolve()
            if not path.is_relative_to(self.root.resolve()):
                raise InvalidInputError(
                    f"file:// snapshot locations must be inside {self.root}")
            if not path.is_file():
                raise SnapshotNotFoundError(f"snapshot file {path} does not exist")
            self.verify(path, checksum)
            return path
        if parsed.scheme not in ("http", "https"):
            raise InvalidInputError("snapshot location must be a file://, http:// or https:// URL")
        target = self.incoming / f"{uuid.uuid4().hex}.snapshot"
        try:
            request = urllib.request.Request(
                location, headers={"api-key": api_key} if api_key else {})
            with urllib.request.urlopen(request, timeout=60) as response, \
                    target.open("wb") as out:
                written = 0
                while chunk := response.read(_CHUNK):
                    written += len(chunk)
                    if written > max_bytes:
                        raise InvalidInputError("snapshot download exceeds the size limit")
                    out.write(chunk)
        except OSError as exc:
            target.unlink(missing_ok=True)
            raise InvalidInputError(f"cannot download snapshot from {location}: {exc}") from None
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        self.verify(target, checksum)
        return target

    def temp_path(self) -> Path:
        return self.incoming / f"{uuid.uuid4().hex}.snapshot"

    @staticmethod
    def verify(path: Path, checksum: str | None) -> None:
        if checksum is not None and sha256_file(path) != checksum.lower():
            raise InvalidSnapshotError("snapshot checksum does not match")

    def discard(self, path: Path) -> None:
        """Remove a temporary download or upload (never a stored snapshot)."""
        if path.parent == self.incoming:
            path.unlink(missing_ok=True)
