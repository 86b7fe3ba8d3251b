"""Background sealing and merging of segments.

Builds run without any lock held: they read frozen/sealed rows, which never
change, and only the tombstone masks move meanwhile. The swap that publishes
a new segment takes the exclusive lock for a moment, re-reads the sources'
tombstones (deletes that arrived during the build), persists tombstones and
the manifest, and then the WAL before the new checkpoint can be dropped.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from peregrine.vector.segment.mutable import MutableSegment, Segment
from peregrine.vector.segment.sealed import SealedSegment, build_sealed_segment

if TYPE_CHECKING:
    from peregrine.vector.collection.collection import Collection

log = logging.getLogger(__name__)

_VACUUM_RATIO = 0.3  # rebuild a sealed segment once this share of it is tombstoned


class Optimizer:
    def __init__(self, collection: Collection) -> None:
        self._c = collection
        self.dirty: set[int] = set()  # sealed segment ids with unsaved tombstones
        self._lock = threading.Lock()  # one build at a time
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.builds = 0

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name=f"optimizer-{self._c.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stopping:
            self._wake.wait(1.0)
            self._wake.clear()
            if self._stopping:
                break
            try:
                self.run_step()
            except Exception:  # keep serving; the next wake retries
                log.exception("optimizer of %s failed", self._c.name)

    # -- policies ---------------------------------------------------------------
    def run_step(self) -> None:
        """Seal frozen segments; merge when there are too many sealed ones."""
        with self._lock:
            frozen = [s for s in self._c.segments if isinstance(s, MutableSegment) and s.frozen]
            if frozen and not self._stopping:
                self._build(frozen)
            sealed = [s for s in self._c.segments if isinstance(s, SealedSegment)]
            limit = self._c.config.index.max_segments
            if len(sealed) > limit and not self._stopping:
                smallest = sorted(sealed, key=lambda s: s.n_rows)[: len(sealed) - limit + 1]
                self._build(list(smallest))
            for seg in [s for s in self._c.segments if isinstance(s, SealedSegment)]:
                if self._stopping:
                    break
                if seg.n_rows and np.count_nonzero(seg.deleted) / seg.n_rows > _VACUUM_RATIO:
                    self._build([seg])

    def run_full(self) -> None:
        """Everything into one clean indexed segment (what ``optimize()`` promises)."""
        c = self._c
        with self._lock:
            with c._write_lock, c._rw.write():
                if c.mutable.n_rows:
                    c.mutable.frozen = True
                    c.mutable = c._new_mutable(c.wal.last_seq + 1)
                    c.segments.append(c.mutable)
            sources = [s for s in c.segments
                       if isinstance(s, SealedSegment) or (isinstance(s, MutableSegment)
                                                           and s.frozen)]
            needs = len(sources) > 1 or any(
                isinstance(s, MutableSegment) or s.deleted.any() for s in sources
            )
            if needs:
                self._build(sources)

    # -- mechanics -------------------------------------------------------------------
    def _build(self, sources: Sequence[Segment]) -> None:
        c = self._c
        with c._rw.read():
            plan = [(seg, np.flatnonzero(~seg.deleted[: seg.n_rows])) for seg in sources]
        keys = np.concatenate([seg.keys_view()[rows] for seg, rows in plan])
        new_seg: SealedSegment | None = None
        seg_id = -1
        if keys.size:
            vectors = np.concatenate([seg.vectors_view()[rows] for seg, rows in plan])
            blobs = [seg.payload_bytes(r) for seg, rows in plan for r in rows.tolist()]
            with c._rw.write():
                seg_id = c.manifest.next_segment_id
                c.manifest.next_segment_id += 1
            directory = c.directory / "segments" / str(seg_id)
            build_sealed_segment(directory, vectors, keys, blobs, c.config.metric,
                                 c.config.index, list(c.config.payload_indexes))
            new_seg = c._open_sealed(seg_id)
            self.builds += 1
        replaced = {id(seg) for seg in sources}
        with c._rw.write():
            sealed = [s for s in c.segments
                      if isinstance(s, SealedSegment) and id(s) not in replaced]
            rest = [s for s in c.segments if not isinstance(s, SealedSegment)
                    and id(s) not in replaced]
            c.segments = [*sealed, *([new_seg] if new_seg else []), *rest]
            checkpoint = min(s.first_seq for s in rest if isinstance(s, MutableSegment)) - 1
            c.wal.sync()  # tombstones on disk must never be ahead of a durable WAL
            if new_seg is not None:
                new_seg.deleted[:] = np.concatenate([seg.deleted[rows] for seg, rows in plan])
                new_seg.n_deleted = int(np.count_nonzero(new_seg.deleted))
                new_seg.persist_deleted()
            for seg in sealed:
                if seg.id in self.dirty:
                    seg.persist_deleted()
            self.dirty.clear()
            c.manifest.checkpoint = max(c.manifest.checkpoint, checkpoint)
            c.manifest.segments = [s.id for s in c.segments if isinstance(s, SealedSegment)]
            c.manifest.save(c.directory)
        c.wal.truncate_before(c.manifest.checkpoint + 1)
        for old in sources:
            if isinstance(old, SealedSegment):
                old.close()
                shutil.rmtree(old.directory, ignore_errors=True)
        log.info("collection %s: built segment %d (%d rows) from %d source(s)",
                 c.name, seg_id, keys.shape[0], len(sources))
