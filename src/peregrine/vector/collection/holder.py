"""The segments of one collection and everything that keeps them consistent.

A ``SegmentHolder`` owns what lives in a collection directory: the config,
the manifest, the WAL, the list of segments (sealed ones plus exactly one
active mutable segment) and the two locks that order changes to them. The
collection's read and write paths, the optimizer and snapshots all work
through its small interface, so none of them touches another's fields:

* ``reading()`` / ``publishing()``: the readers-writer lock. Searches hold it
  shared; applying a write or publishing a built segment holds it exclusively
  for the microseconds it takes, so a batch becomes visible all at once.
* ``writes_paused()``: the writer mutex that orders WAL appends with their
  apply. Snapshots hold it to see a quiescent WAL.
* ``apply`` / ``log_and_apply``: one WAL record's effect on the segments.
* ``rotate_mutable``, ``new_segment_id``, ``swap``: what the optimizer needs
  to replace segments by a freshly built one, durably.
* ``durable_files``: what a snapshot must copy.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from peregrine.core.errors import ClosedError, StorageError
from peregrine.core.fsio import write_atomic
from peregrine.core.locks import ReadWriteLock
from peregrine.vector.collection import codec
from peregrine.vector.collection.manifest import CONFIG_FILE, MANIFEST, Manifest
from peregrine.vector.collection.wal import Op, WriteAheadLog
from peregrine.vector.ids import KeyArray
from peregrine.vector.segment.coarse import Centroids
from peregrine.vector.segment.mutable import MutableSegment, Segment
from peregrine.vector.segment.sealed import SealedSegment
from peregrine.vector.types import CollectionConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DurableFile:
    """A file a snapshot must hold: ``link`` when it never changes in place."""

    relative: Path
    path: Path
    link: bool


class SegmentHolder:
    def __init__(self, directory: Path, config: CollectionConfig, fsync: str = "group",
                 fsync_interval_ms: int = 50, *, strict: bool = False) -> None:
        """Open the directory: load sealed segments, then replay the WAL tail.

        ``strict`` is for snapshots being checked before they replace anything:
        a torn or unreadable WAL record is an error there, while in a live
        directory a torn tail is the write a crash interrupted and is cut.
        """
        self.directory = directory
        self.config = config
        self._rw = ReadWriteLock()
        self._write_lock = threading.Lock()
        # Held while a batch applies its records ahead of its one WAL record: a
        # build must not publish (persist tombstones, seal rows) meanwhile.
        self._batch_lock = threading.Lock()
        self._records: list[tuple[int, bytes]] | None = None  # a batch's, while it runs
        self._batch_seq = 0
        self._dirty: set[int] = set()  # sealed segment ids with unsaved tombstones
        self.closed = False
        # Memory holds a failed batch's unlogged records: nothing may read, write
        # or publish through this holder any more; the collection reopens.
        self.poisoned = False
        # Called when a full mutable segment is frozen (the optimizer's wake-up).
        self.on_freeze: Callable[[], None] = lambda: None
        # When the last write was applied (the optimizer seals after a pause).
        self.last_write = time.monotonic()
        self.manifest = Manifest.load(directory)
        # Coarse partition centroids, trained once for all mutable segments.
        self._centroids = Centroids(config.dim)
        seg_root = directory / "segments"
        seg_root.mkdir(parents=True, exist_ok=True)
        listed = set(self.manifest.segments)
        for stray in seg_root.iterdir():  # half-built or superseded segments
            if not stray.name.isdigit() or int(stray.name) not in listed:
                shutil.rmtree(stray, ignore_errors=True)
        self.segments: list[Segment] = []
        try:
            for seg_id in self.manifest.segments:
                self.segments.append(self.open_sealed(seg_id))
                if strict:
                    self.sealed_segments()[-1].check_keys()
                    self.sealed_segments()[-1].check_payloads()
            self.mutable = self._new_mutable(self.manifest.checkpoint + 1)
            self.segments.append(self.mutable)
            self.wal = WriteAheadLog(directory / "wal", fsync, fsync_interval_ms)
            replayed = 0
            for record in self.wal.replay(self.manifest.checkpoint, strict=strict):
                decoded = None
                if strict and record.op is Op.UPSERT:
                    decoded = codec.UpsertBatch.decode(record.body, config.dim)
                    codec.check_blobs(decoded.blobs)
                if strict and record.op is Op.BATCH:
                    for op, body in codec.decode_batch(record.body):
                        if op == Op.UPSERT:
                            codec.check_blobs(codec.UpsertBatch.decode(body, config.dim).blobs)
                        elif op != Op.DELETE:
                            raise StorageError(f"unknown operation {op} in a batch record")
                self.apply(record.op, record.body, record.seq, decoded)
                replayed += 1
        except BaseException:
            self._close_segments()
            raise
        if replayed:
            log.info("collection %s: replayed %d WAL records", config.name, replayed)
        self.wal.open_for_append()

    # -- opening segments --------------------------------------------------------------
    def segment_dir(self, seg_id: int) -> Path:
        return self.directory / "segments" / str(seg_id)

    def open_sealed(self, seg_id: int) -> SealedSegment:
        path = self.segment_dir(seg_id)
        if not path.is_dir():
            raise StorageError(f"segment {seg_id} listed in the manifest is missing")
        segment = SealedSegment(seg_id, path, self.config.metric, self.config.index)
        if segment.dim != self.config.dim:
            segment.close()
            raise StorageError(f"segment {seg_id} holds {segment.dim}-d vectors, the "
                               f"collection is {self.config.dim}-d")
        return segment

    def new_segment_id(self) -> int:
        with self._rw.write():
            seg_id = self.manifest.next_segment_id
            self.manifest.next_segment_id += 1
            return seg_id

    def _new_mutable(self, first_seq: int) -> MutableSegment:
        seg_id = self.manifest.next_segment_id
        self.manifest.next_segment_id += 1
        return MutableSegment(seg_id, self.config.dim, self.config.index.segment_rows,
                              self.config.metric, first_seq, self._centroids)

    # -- locks ---------------------------------------------------------------------------
    def acquire_read(self) -> bool:
        """Take the shared lock; False (and not held) once the holder is closed."""
        self._rw.acquire_read()
        if self.closed or self.poisoned:
            self._rw.release_read()
            return False
        return True

    def release_read(self) -> None:
        self._rw.release_read()

    @contextmanager
    def reading(self) -> Iterator[None]:
        if not self.acquire_read():
            raise ClosedError(f"collection {self.config.name!r} is closed")
        try:
            yield
        finally:
            self._rw.release_read()

    @contextmanager
    def publishing(self) -> Iterator[None]:
        with self._rw.write():
            yield

    def acquire_writes(self) -> bool:
        """Take the writer mutex; False (and not held) once the holder is closed."""
        self._write_lock.acquire()
        if self.closed or self.poisoned:
            self._write_lock.release()
            return False
        return True

    def release_writes(self) -> None:
        self._write_lock.release()

    @contextmanager
    def writes_paused(self) -> Iterator[None]:
        if not self.acquire_writes():
            raise ClosedError(f"collection {self.config.name!r} is closed")
        try:
            yield
        finally:
            self._write_lock.release()

    # -- segment lists (call under reading() or publishing()) --------------------------
    def sealed_segments(self) -> list[SealedSegment]:
        return [s for s in self.segments if isinstance(s, SealedSegment)]

    def frozen_segments(self) -> list[MutableSegment]:
        return [s for s in self.segments if isinstance(s, MutableSegment) and s.frozen]

    # -- writes ----------------------------------------------------------------------------
    @contextmanager
    def recording(self) -> Iterator[list[tuple[int, bytes]]]:
        """A batch: records are applied at once but logged together by
        ``commit_recording`` (the caller holds ``writes_paused()``). Until then no
        build publishes, so nothing of the batch reaches disk before its record;
        a batch that does not commit leaves memory ahead of the WAL, and the
        caller must reopen the collection."""
        with self._batch_lock:
            records: list[tuple[int, bytes]] = []
            self._records = records
            try:
                yield records
            except BaseException:
                if records:  # applied, never logged: no one may see or save them now
                    with self._rw.write():
                        self.poisoned = True
                raise
            finally:
                self._records = None

    def commit_recording(self) -> int:
        """Log the batch's records as one WAL record; returns its sequence number."""
        records, self._records = self._records, None
        if records is None:
            raise StorageError("no batch is being recorded")
        if not records:
            return self.wal.last_seq
        seq = self.wal.append(Op.BATCH, codec.encode_batch(records))
        if seq != self._batch_seq:
            raise StorageError(f"batch logged as {seq}, applied as {self._batch_seq}")
        return seq

    def log_and_apply(self, op: Op, body: bytes, decoded: Any = None) -> int:
        """Append one WAL record and apply it; the caller holds ``writes_paused()``.
        Within ``recording()`` the record joins the batch instead."""
        if self._records is not None:
            self._batch_seq = seq = self.wal.last_seq + 1  # the batch record's, to come
            self._records.append((int(op), body))
            self.apply(op, body, seq, decoded)
            return seq
        seq = self.wal.append(op, body)
        self.apply(op, body, seq, decoded)
        return seq

    def apply(self, op: Op, body: bytes, seq: int, decoded: Any = None) -> None:
        self.last_write = time.monotonic()
        if op is Op.UPSERT:
            batch = decoded if decoded is not None else codec.UpsertBatch.decode(
                body, self.config.dim)
            with self._rw.write():
                self._tombstone(batch.keys)
                self._append(batch, seq)
        elif op is Op.DELETE:
            keys = decoded if decoded is not None else codec.decode_delete(body)
            with self._rw.write():
                self._tombstone(keys)
        elif op is Op.BATCH:
            for sub, sub_body in codec.decode_batch(body):
                self.apply(Op(sub), sub_body, seq)

    def _tombstone(self, keys: KeyArray) -> None:
        for seg in self.segments:
            _, rows = seg.lookup(keys)  # live rows only
            if rows.size and seg.tombstone(rows) and isinstance(seg, SealedSegment):
                self._dirty.add(seg.id)

    def _append(self, batch: codec.UpsertBatch, seq: int) -> None:
        start, n = 0, batch.keys.shape[0]
        while start < n:
            if self.mutable.free == 0:
                self._rotate(seq)
            stop = min(n, start + self.mutable.free)
            self.mutable.append(batch.keys[start:stop], batch.vectors[start:stop],
                                batch.blobs[start:stop])
            start = stop

    def _rotate(self, first_seq: int) -> None:
        self.mutable.frozen = True
        self.mutable = self._new_mutable(first_seq)
        self.segments.append(self.mutable)
        self.on_freeze()

    def rotate_mutable(self) -> bool:
        """Freeze the active segment if it holds rows (everything pending gets indexed)."""
        with self.writes_paused(), self._rw.write():
            if not self.mutable.n_rows:
                return False
            self._rotate(self.wal.last_seq + 1)
            return True

    def update_config(self, config: CollectionConfig) -> None:
        """Persist a new config; the caller holds ``writes_paused()``."""
        write_atomic(self.directory / CONFIG_FILE, orjson.dumps(config.to_dict()))
        self.config = config

    # -- publishing a build ------------------------------------------------------------
    def swap(self, sources: Sequence[Segment], built: SealedSegment | None,
             source_rows: Sequence[np.ndarray], order: np.ndarray | None = None) -> None:
        """Replace ``sources`` by ``built`` (None: they held no live row) durably.

        ``source_rows`` are the rows of each source that went into the build, one
        source after another; ``order``, when the build laid them out otherwise
        (``segment/layout.py``): built row ``i`` is row ``order[i]`` of that
        concatenation. Their tombstones are carried over as they are now, which
        includes deletes that arrived while the build ran.
        """
        replaced = {id(seg) for seg in sources}
        with self._batch_lock, self._rw.write():
            if self.closed or self.poisoned:  # closed, restored or reopening: discard it
                if built is not None:
                    built.close()
                    shutil.rmtree(built.directory, ignore_errors=True)
                raise ClosedError(f"collection {self.config.name!r} is closed")
            sealed = [s for s in self.sealed_segments() if id(s) not in replaced]
            rest = [s for s in self.segments
                    if not isinstance(s, SealedSegment) and id(s) not in replaced]
            checkpoint = min(s.first_seq for s in rest if isinstance(s, MutableSegment)) - 1
            # Everything durable first, then published: if a write fails here the
            # segment list is as it was and the caller discards ``built`` (an
            # extended segment carries every tombstone its base ever had, and
            # they exist nowhere else on disk until this persists them).
            self.wal.sync()  # tombstones on disk must never be ahead of a durable WAL
            if built is not None:
                carried = np.concatenate([seg.deleted[rows]
                                          for seg, rows in zip(sources, source_rows,
                                                               strict=True)])
                if order is not None:
                    carried = carried[order]
                built.tombstone(np.flatnonzero(carried))
                built.persist_deleted()
            for seg in sealed:
                if seg.id in self._dirty:
                    seg.persist_deleted()
                    self._dirty.discard(seg.id)
            self._dirty.clear()  # the replaced sources' ids, if any
            segments = [*sealed, *([built] if built else []), *rest]
            manifest_segments = [s.id for s in segments if isinstance(s, SealedSegment)]
            previous = (self.manifest.checkpoint, self.manifest.segments)
            self.manifest.checkpoint = max(self.manifest.checkpoint, checkpoint)
            self.manifest.segments = manifest_segments
            try:
                self.manifest.save(self.directory)
            except BaseException:
                self.manifest.checkpoint, self.manifest.segments = previous
                raise
            self.segments = segments
            for old in sources:
                if isinstance(old, MutableSegment):
                    old.retire()  # its partition jobs have nothing left to serve
        self.wal.truncate_before(self.manifest.checkpoint + 1)
        for old in sources:
            if isinstance(old, SealedSegment):
                old.close()
                shutil.rmtree(old.directory, ignore_errors=True)

    # -- snapshots ------------------------------------------------------------------------
    def durable_files(self) -> list[DurableFile]:
        """Files that make up the collection on disk now; call with writes paused
        and no build publishing (the optimizer paused), after ``wal.sync()``."""
        files = [DurableFile(Path(CONFIG_FILE), self.directory / CONFIG_FILE, True)]
        if (self.directory / MANIFEST).exists():
            files.append(DurableFile(Path(MANIFEST), self.directory / MANIFEST, True))
        for seg_id in self.manifest.segments:
            root = self.segment_dir(seg_id)
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    files.append(DurableFile(path.relative_to(self.directory), path, True))
        for path in self.wal.files():  # appended in place: copied, not linked
            files.append(DurableFile(path.relative_to(self.directory), path, False))
        return files

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Flush the WAL and release the segments, once readers and writers are out."""
        with self._write_lock, self._rw.write():
            if self.closed:
                return
            self.closed = True
            self.wal.close()
            self._close_segments()

    def _close_segments(self) -> None:
        for seg in self.segments:
            if isinstance(seg, SealedSegment):
                seg.close()
            elif isinstance(seg, MutableSegment):
                seg.retire()
