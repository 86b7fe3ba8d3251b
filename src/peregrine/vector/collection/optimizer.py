"""Background sealing and merging of segments.

Builds run without any lock held: they read frozen/sealed rows, which never
change, and only the tombstone masks move meanwhile. The holder's ``swap``
then publishes the new segment under the exclusive lock, carries over the
sources' current tombstones (deletes that arrived during the build) and makes
the result durable before the WAL it replaces is dropped.

A build checks for shutdown between chunks of its work, so stopping the
server never waits for a large merge to finish: the half-built directory is
removed and the sources stay as they were.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from peregrine.vector.collection.holder import SegmentHolder
from peregrine.vector.segment.mutable import MutableSegment, Segment
from peregrine.vector.segment.sealed import BuildCancelledError, SealedSegment, build_sealed_segment

log = logging.getLogger(__name__)

_VACUUM_RATIO = 0.3  # rebuild a sealed segment once this share of it is tombstoned


class Optimizer:
    def __init__(self, holder: SegmentHolder) -> None:
        self._holder = holder
        self._lock = threading.Lock()  # one build at a time
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.builds = 0

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name=f"optimizer-{self._holder.config.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Cancel a build under way and wait for the thread to end."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def wake(self) -> None:
        self._wake.set()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No build publishes or deletes segment files while this is held."""
        with self._lock:
            yield

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if self._stopping.is_set():
                break
            try:
                self.run_step()
            except BuildCancelledError:
                break
            except Exception:  # keep serving; the next wake retries
                log.exception("optimizer of %s failed", self._holder.config.name)

    # -- policies ---------------------------------------------------------------
    def run_step(self) -> None:
        """Seal frozen segments; merge when there are too many sealed ones."""
        holder = self._holder
        with self._lock:
            with holder.reading():
                frozen = holder.frozen_segments()
            if frozen:
                self._build(frozen)
            with holder.reading():
                sealed = holder.sealed_segments()
            limit = holder.config.index.max_segments
            if len(sealed) > limit:
                smallest = sorted(sealed, key=lambda s: s.n_rows)[: len(sealed) - limit + 1]
                self._build(list(smallest))
            with holder.reading():
                sealed = holder.sealed_segments()
            for seg in sealed:
                if seg.n_rows and seg.n_deleted / seg.n_rows > _VACUUM_RATIO:
                    self._build([seg])

    def run_full(self) -> None:
        """Everything into one clean indexed segment (what ``optimize()`` promises)."""
        holder = self._holder
        with self._lock:
            holder.rotate_mutable()
            with holder.reading():
                sources: list[Segment] = [*holder.sealed_segments(), *holder.frozen_segments()]
            needs = len(sources) > 1 or any(
                isinstance(s, MutableSegment) or s.n_deleted for s in sources
            )
            if needs:
                self._build(sources)

    # -- mechanics -------------------------------------------------------------------
    def _build(self, sources: Sequence[Segment]) -> None:
        holder = self._holder
        if self._stopping.is_set():
            raise BuildCancelledError
        with holder.reading():
            plan = [np.flatnonzero(~seg.deleted[: seg.n_rows]) for seg in sources]
        keys = np.concatenate([seg.keys_view()[rows] for seg, rows in zip(sources, plan,
                                                                          strict=True)])
        built: SealedSegment | None = None
        seg_id = -1
        if keys.size:
            vectors = np.concatenate([seg.vectors_view()[rows]
                                      for seg, rows in zip(sources, plan, strict=True)])
            blobs = [seg.payload_bytes(r) for seg, rows in zip(sources, plan, strict=True)
                     for r in rows.tolist()]
            seg_id = holder.new_segment_id()
            config = holder.config
            build_sealed_segment(holder.segment_dir(seg_id), vectors, keys, blobs,
                                 config.metric, config.index, list(config.payload_indexes),
                                 cancelled=self._stopping.is_set)
            built = holder.open_sealed(seg_id)
            self.builds += 1
        holder.swap(sources, built, plan)
        log.info("collection %s: built segment %d (%d rows) from %d source(s)",
                 holder.config.name, seg_id, keys.shape[0], len(sources))
