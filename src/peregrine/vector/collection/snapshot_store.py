"""Named snapshot files of collections, as Qdrant's snapshot API sees them.

Snapshots live under ``<data>/snapshots/<collection>/`` with a ``.checksum``
(SHA-256) beside each, so a download can be verified and a recovery can be
refused before anything is replaced.

Recovery sources are untrusted. A ``file://`` location must lie inside the
snapshot directory (ForbiddenError otherwise, as Qdrant answers 403). An
``http(s)://`` location must name an allowed host when ``allowed_hosts`` is
set, every redirect is checked the same way, and a failed download reports
one generic message: what answered at an address (a refused connection, a
401, a timeout) is not told back, so a key holder cannot use recovery to map
internal ports.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import shutil
import urllib.parse
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from peregrine.core.errors import ForbiddenError, InvalidInputError
from peregrine.core.fsio import write_atomic
from peregrine.vector.errors import InvalidSnapshotError, SnapshotNotFoundError
from peregrine.vector.types import validate_collection_name

log = logging.getLogger(__name__)

STORAGE = ".storage"  # full snapshots' directory: no collection name starts with "."
_SNAPSHOT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,230}\.snapshot$")
_CHUNK = 1 << 20
# File names are at most 255 bytes: the stem of a snapshot name leaves room
# for the time stamp, ".snapshot", and the ".checksum"/".tmp" companions.
_MAX_STEM = 180
_DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    name: str
    creation_time: str
    size: int
    checksum: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class SnapshotStore:
    def __init__(self, root: Path, allowed_hosts: Sequence[str] = ()) -> None:
        self.root = root
        self.allowed_hosts = {h.lower() for h in allowed_hosts}
        self.root.mkdir(parents=True, exist_ok=True)
        self.incoming = root / ".incoming"
        shutil.rmtree(self.incoming, ignore_errors=True)  # leftovers of interrupted uploads
        self.incoming.mkdir()

    def directory(self, collection: str | None) -> Path:
        """A collection's snapshots; None: the storage's (every collection at once,
        under a name no collection can have)."""
        if collection is None:
            return self.root / STORAGE
        validate_collection_name(collection)
        return self.root / collection

    def new_path(self, collection: str | None) -> Path:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H-%M-%S-%f")
        stem = collection or "full-snapshot"
        if len(stem) > _MAX_STEM:  # keep long names unique but within the file-name limit
            digest = hashlib.sha256(stem.encode()).hexdigest()[:12]
            stem = f"{stem[:_MAX_STEM - 13]}-{digest}"
        directory = self.directory(collection)
        directory.mkdir(parents=True, exist_ok=True)
        return directory / f"{stem}-{stamp}.snapshot"

    def register(self, path: Path) -> SnapshotInfo:
        """Record the checksum of a freshly written snapshot file."""
        checksum = sha256_file(path)
        write_atomic(path.parent / (path.name + ".checksum"), checksum.encode())
        return self._info(path, checksum)

    def _info(self, path: Path, checksum: str | None = None) -> SnapshotInfo:
        stat = path.stat()
        if checksum is None:
            side = path.parent / (path.name + ".checksum")
            try:
                checksum = side.read_text().strip()
            except OSError:
                checksum = sha256_file(path)
        created = datetime.fromtimestamp(stat.st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return SnapshotInfo(path.name, created, stat.st_size, checksum)

    def list(self, collection: str | None) -> list[SnapshotInfo]:
        directory = self.directory(collection)
        if not directory.is_dir():
            return []
        return [self._info(p) for p in sorted(directory.glob("*.snapshot"))
                if _SNAPSHOT_RE.match(p.name)]

    def path(self, collection: str | None, name: str) -> Path:
        if not _SNAPSHOT_RE.match(name):
            raise InvalidInputError(f"invalid snapshot name {name!r}")
        path = self.directory(collection) / name
        if not path.is_file():
            of = "the storage" if collection is None else f"collection {collection!r}"
            raise SnapshotNotFoundError(f"snapshot {name!r} of {of} does not exist")
        return path

    def delete(self, collection: str | None, name: str) -> None:
        path = self.path(collection, name)
        path.unlink()
        (path.parent / (name + ".checksum")).unlink(missing_ok=True)

    def fetch(self, location: str, checksum: str | None = None,
              max_bytes: int = 1 << 40, api_key: str | None = None) -> Path:
        """Resolve a recovery location to a local file (a temp copy for URLs)."""
        parsed = urllib.parse.urlparse(location)
        if parsed.scheme == "file":
            path = Path(urllib.parse.unquote(parsed.path)).resolve()
            if not path.is_relative_to(self.root.resolve()):
                raise ForbiddenError(
                    f"Snapshot file path must be inside the snapshots directory {self.root}")
            if not path.is_file():
                raise SnapshotNotFoundError(f"snapshot file {path} does not exist")
            self.verify(path, checksum)
            return path
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise InvalidInputError("snapshot location must be a file://, http:// or https:// URL")
        self.check_host(location)  # also refuses an invalid port
        target = self.temp_path()
        try:
            request = urllib.request.Request(
                location, headers={"api-key": api_key} if api_key else {})
            with _opener(self).open(request, timeout=_DOWNLOAD_TIMEOUT_S) as response, \
                    target.open("wb") as out:
                _copy_bounded(response, out, max_bytes)
        except (InvalidInputError, ForbiddenError):
            target.unlink(missing_ok=True)
            raise
        except (OSError, ValueError, http.client.HTTPException) as exc:
            target.unlink(missing_ok=True)
            log.warning("snapshot download from %s failed: %s", location, exc)
            raise InvalidInputError(
                "cannot download the snapshot: the location did not answer with a snapshot "
                "(see the server log)") from None
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        self.verify(target, checksum)
        return target

    def check_host(self, url: str) -> None:
        """Refuse URLs with an invalid port or whose host (or host:port) is not
        allowed by the settings."""
        parsed = urllib.parse.urlparse(url)
        host = (parsed.hostname or "").lower()
        try:
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
        except ValueError:
            raise InvalidInputError("snapshot location has an invalid port") from None
        if self.allowed_hosts and host not in self.allowed_hosts \
                and f"{host}:{port}" not in self.allowed_hosts:
            raise ForbiddenError(
                f"snapshots may not be recovered from {host}:{port} "
                "(vector.snapshot_url_hosts lists the allowed hosts)")

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


def _copy_bounded(source: IO[bytes], out: IO[bytes], max_bytes: int) -> None:
    written = 0
    while chunk := source.read(_CHUNK):
        written += len(chunk)
        if written > max_bytes:
            raise InvalidInputError(
                f"the snapshot is larger than {max_bytes} bytes (vector.max_snapshot_bytes)")
        out.write(chunk)


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s) URLs on allowed hosts."""

    def __init__(self, store: SnapshotStore) -> None:
        self.store = store

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> Any:
        target = urllib.parse.urlparse(newurl)
        if target.scheme not in ("http", "https"):
            raise ForbiddenError("snapshot download redirected to a non-http location")
        self.store.check_host(newurl)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and target.netloc != urllib.parse.urlparse(req.full_url).netloc:
            new.remove_header("Api-key")  # the key was for the host it was sent to
        return new


def _opener(store: SnapshotStore) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_CheckedRedirects(store))
