"""Write-ahead log of one collection.

Each mutation is one record, so a batch upsert is atomic: after a crash the
record is either whole (its CRC matches) and replayed, or torn and dropped.

Record layout (little-endian)::

    u32 body_len | u32 crc32(seq, op, body) | u64 seq | u8 op | body

The log is a directory of files named by the sequence number of their first
record; files wholly below the checkpoint are deleted once sealed segments
hold their effects. Durability is chosen per database: ``always`` fsyncs
before the call returns; ``group`` (default) lets a background thread fsync
every few milliseconds, so a process crash loses nothing (the data is in the
OS page cache) and a power loss loses at most one interval.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from peregrine.core.errors import InvalidInputError, StorageError
from peregrine.core.fsio import fsync_dir

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<IIQB")
_MAX_FILE_BYTES = 64 << 20
_SUFFIX = ".wal"
_FILE_RE = re.compile(r"[0-9]{20}\.wal")


class Op(IntEnum):
    UPSERT = 1
    DELETE = 2
    BATCH = 3  # several UPSERT/DELETE records applied together (``codec.encode_batch``)


_OPS = frozenset(int(op) for op in Op)


class FsyncPolicy(str):
    ALWAYS = "always"
    GROUP = "group"
    NEVER = "never"

    @staticmethod
    def parse(value: str) -> str:
        if value not in ("always", "group", "never"):
            raise InvalidInputError("fsync must be 'always', 'group' or 'never'")
        return value


@dataclass(frozen=True, slots=True)
class WalRecord:
    seq: int
    op: Op
    body: bytes


def _crc(seq: int, op: int, body: bytes | memoryview) -> int:
    return zlib.crc32(body, zlib.crc32(struct.pack("<QB", seq, op))) & 0xFFFFFFFF


class WriteAheadLog:
    def __init__(self, directory: Path, fsync: str = "group", fsync_interval_ms: int = 50) -> None:
        self.directory = directory
        self.fsync = FsyncPolicy.parse(fsync)
        self.fsync_interval = max(1, fsync_interval_ms) / 1000.0
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._file_bytes = 0
        self._dirty = False
        self._closed = False
        self.last_seq = 0
        self._flusher: threading.Thread | None = None
        self._wake = threading.Event()

    # -- recovery ---------------------------------------------------------
    def _files(self) -> list[Path]:
        """Log files in sequence order; anything else in the directory is an error.

        A stray ``*.wal`` file would otherwise be read as part of the log (or
        break its ordering): refuse to guess.
        """
        files = []
        for path in self.directory.glob(f"*{_SUFFIX}"):
            if not _FILE_RE.fullmatch(path.name):
                raise StorageError(f"WAL {self.directory}: unexpected file {path.name!r}")
            files.append(path)
        return sorted(files, key=lambda p: int(p.stem))

    def replay(self, after_seq: int, *, strict: bool = False) -> Iterator[WalRecord]:
        """Yield intact records with seq > after_seq and cut a torn tail.

        Must be called once before the first append: it also positions the
        log after the last intact record. A torn or corrupt record can only be
        the write a crash interrupted, at the end of the newest file; it is
        cut unless ``strict`` (a snapshot being checked, whose log was synced
        before it was copied and so must be whole), where it is an error.
        """
        self.last_seq = after_seq
        files = self._files()
        previous = -1
        for idx, path in enumerate(files):
            data = path.read_bytes()
            pos = 0
            while pos < len(data):
                if pos + _HEADER.size > len(data):
                    break
                body_len, crc, seq, op = _HEADER.unpack_from(data, pos)
                end = pos + _HEADER.size + body_len
                if end > len(data):
                    break
                body = memoryview(data)[pos + _HEADER.size : end]
                if _crc(seq, op, body) != crc:
                    break
                if op not in _OPS:
                    raise StorageError(f"WAL {path.name}: record {seq} has unknown kind {op}")
                if pos == 0 and seq != int(path.stem):
                    # Files are named by their first record, and truncation trusts the names.
                    raise StorageError(f"WAL {path.name} starts with record {seq}")
                if seq <= previous:
                    raise StorageError(f"WAL {path.name}: record {seq} follows {previous}")
                previous = seq
                if seq > self.last_seq:
                    self.last_seq = seq
                if seq > after_seq:
                    yield WalRecord(seq, Op(op), bytes(body))
                pos = end
            if pos < len(data):
                if strict:
                    raise StorageError(f"WAL {path.name}: {len(data) - pos} bytes at byte "
                                       f"{pos} are not a whole record")
                log.warning("WAL %s: dropping %d bytes of torn tail", path.name, len(data) - pos)
                with open(path, "r+b") as fh:
                    fh.truncate(pos)
                    os.fsync(fh.fileno())
                for later in files[idx + 1 :]:
                    log.warning("WAL %s: discarded after a torn record", later.name)
                    later.unlink()
                break

    def open_for_append(self) -> None:
        files = self._files()
        path = files[-1] if files else self.directory / f"{self.last_seq + 1:020d}{_SUFFIX}"
        self._open(path)
        if self.fsync == FsyncPolicy.GROUP:
            self._flusher = threading.Thread(target=self._flush_loop, name="wal-fsync", daemon=True)
            self._flusher.start()

    def _open(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._file_bytes = os.fstat(self._fd).st_size
        fsync_dir(self.directory)

    # -- writing ----------------------------------------------------------
    def append(self, op: Op, body: bytes) -> int:
        """Write one record; returns its sequence number once durable per policy."""
        with self._lock:
            if self._fd is None:
                raise RuntimeError("WAL is not open")
            seq = self.last_seq + 1
            if self._file_bytes >= _MAX_FILE_BYTES:
                self._rotate(seq)
            record = _HEADER.pack(len(body), _crc(seq, op, body), seq, op) + body
            view = memoryview(record)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            self._file_bytes += len(record)
            self.last_seq = seq
            if self.fsync == FsyncPolicy.ALWAYS:
                os.fsync(self._fd)
            else:
                self._dirty = True
            return seq

    def _rotate(self, next_seq: int) -> None:
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._open(self.directory / f"{next_seq:020d}{_SUFFIX}")

    def sync(self) -> None:
        with self._lock:
            if self._fd is not None and self._dirty:
                os.fsync(self._fd)
                self._dirty = False

    def _flush_loop(self) -> None:
        while not self._closed:
            self._wake.wait(self.fsync_interval)
            try:
                self.sync()
            except OSError:  # pragma: no cover - disk failure; next append reports it
                log.exception("WAL fsync failed")

    def truncate_before(self, seq: int) -> None:
        """Delete files whose records all have seq < ``seq`` (already checkpointed)."""
        with self._lock:
            files = self._files()
            for path, nxt in itertools.pairwise(files):
                if int(nxt.stem) <= seq:
                    path.unlink()

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self._files())

    def files(self) -> list[Path]:
        return self._files()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._flusher is not None:
            self._flusher.join()
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
