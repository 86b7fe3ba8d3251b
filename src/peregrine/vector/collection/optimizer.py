"""Background indexing and compaction of a collection's segments.

The policy aims at the layout ``optimize()`` produces, one segment with one
graph, without anyone calling it, and keeps what waits for a graph cheap to
search meanwhile:

* **Seal** the mutable segment when it is full, and also once writes have
  stopped for ``IDLE_S`` (holding at least ``IDLE_SEAL_MIN_ROWS``): the rows
  of a finished ingest do not wait for more writes to get their graph. Fewer
  rows stay in the mutable segment, where an exact scan of them costs
  microseconds.
* **Extend** the largest segment rather than building small graphs and
  merging them later: its graph grows by the new rows' insertions (see
  ``segment/build.py``), so the total indexing work of an ingest is one
  insertion per row, as for a single build after it. Extending also rewrites
  the largest segment's files, a copy at disk speed (~2 us a row against
  ~200 us to insert one), so it is chosen while that copy is at most
  ``EXTEND_RATIO`` times the rows added; smaller additions get a graph of
  their own and join the large one once they add up, or after writes have
  stopped for ``IDLE_COMPACT_S``.
* **Vacuum** a segment whose rows are more than ``VACUUM_RATIO`` tombstones:
  rebuilt from its live rows.

Qdrant's optimizers make the same three decisions (indexing, merge, vacuum)
with size thresholds only: segments below ``indexing_threshold`` stay
unindexed for good and ``default_segment_number`` segments remain after a
load. Here the idle rule and the extension bring a loaded collection to one
graph.

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
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from peregrine.core.errors import ClosedError
from peregrine.runtime.malloc import release_free_memory
from peregrine.vector.collection.holder import SegmentHolder
from peregrine.vector.segment.build import build_sealed_segment, extend_sealed_segment
from peregrine.vector.segment.layout import layout_fields, layout_order
from peregrine.vector.segment.mutable import MutableSegment, Segment
from peregrine.vector.segment.sealed import BuildCancelledError, SealedSegment
from peregrine.vector.types import CollectionConfig, DenseSpec

log = logging.getLogger(__name__)


def graphed(config: CollectionConfig) -> dict[str, DenseSpec]:
    """The named vectors a sealed segment gives a graph of its own: the single
    dense ones (multivectors rerank exactly), unless their ``m`` is 0."""
    return {name: spec for name, spec in config.named.items()
            if not spec.multi and spec.m != 0}

IDLE_S = 1.0  # no write for this long: seal what the mutable segment holds
IDLE_SEAL_MIN_ROWS = 256
EXTEND_RATIO = 16
# After this long without writes the largest segment absorbs the smaller ones
# whatever their size, up to IDLE_EXTEND_MAX_ROWS (a one-off copy of at most
# ~2 GB). Waiting longer than IDLE_S keeps a client that writes a few rows
# every few seconds from having the large segment copied each time.
IDLE_COMPACT_S = 30.0
IDLE_EXTEND_MAX_ROWS = 1_000_000
VACUUM_RATIO = 0.3
_POLL_S = 0.25
_MAX_BACKOFF_S = 60.0  # how often the loop looks for idleness when nothing wakes it


class Optimizer:
    def __init__(self, holder: SegmentHolder) -> None:
        self._holder = holder
        self._lock = threading.Lock()  # one build at a time
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.builds = 0
        self.building = False  # a build is under way (status "yellow")
        self.last_error: str | None = None

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
        backoff = 1.0
        while not self._stopping.is_set():
            self._wake.wait(_POLL_S)
            self._wake.clear()
            if self._stopping.is_set():
                break
            try:
                if self.run_step():
                    # Only now are the replaced segments unreferenced and freed.
                    release_free_memory()
                    self.last_error = None  # a build went through
                    self._wake.set()  # more may be due: look again at once
            except BuildCancelledError:
                break
            except ClosedError:
                if self._holder.closed or self._holder.poisoned:
                    break  # the holder is gone or being reopened: this loop is done
                raise
            except Exception as exc:  # keep serving; retry after a growing pause
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("optimizer of %s failed", self._holder.config.name)
                self._stopping.wait(backoff)
                backoff = min(_MAX_BACKOFF_S, backoff * 2)
            else:
                backoff = 1.0

    # -- policy -------------------------------------------------------------------
    def idle(self, seconds: float | None = None) -> bool:
        """No write for ``seconds`` (default ``IDLE_S``)."""
        wait = IDLE_S if seconds is None else seconds
        return time.monotonic() - self._holder.last_write >= wait

    def pending(self) -> bool:
        """Whether rows wait for a graph the policy will give them (call under
        the holder's ``reading()``)."""
        holder = self._holder
        return bool(holder.frozen_segments()) or holder.mutable.n_rows >= IDLE_SEAL_MIN_ROWS

    def run_step(self) -> bool:
        """Make at most one build; True when one was made (another may be due)."""
        holder = self._holder
        with self._lock:
            if self.idle() and holder.mutable.n_rows >= IDLE_SEAL_MIN_ROWS:
                holder.rotate_mutable()
            quiet = self.idle(IDLE_COMPACT_S)
            with holder.reading():
                frozen: list[Segment] = list(holder.frozen_segments())
                sealed = holder.sealed_segments()
            dirty = [s for s in sealed if s.n_rows and s.n_deleted > VACUUM_RATIO * s.n_rows]
            if dirty:
                self._build(dirty[:1])
                return True
            base = max(sealed, key=lambda s: s.n_rows, default=None)
            others: list[Segment] = [s for s in sealed if s is not base]
            if frozen:
                if base is not None and self._extends(base, [*others, *frozen], quiet):
                    self._extend(base, [*others, *frozen])
                else:
                    self._build(frozen)
                return True
            too_many = len(sealed) > holder.config.index.max_segments
            if base is not None and others and (too_many or quiet) and self._extends(
                    base, others, quiet):
                self._extend(base, others)
                return True
            if too_many:
                smallest = sorted(sealed, key=lambda s: s.n_rows)
                self._build(smallest[: len(sealed) - holder.config.index.max_segments + 1])
                return True
            return False

    @staticmethod
    def _extends(base: SealedSegment, added: Sequence[Segment], quiet: bool) -> bool:
        rows = sum(s.n_rows - s.n_deleted for s in added)
        if rows == 0:
            return False  # nothing to add: the empty segments just go (a plain build)
        return base.n_rows <= EXTEND_RATIO * rows or (
            quiet and base.n_rows <= IDLE_EXTEND_MAX_ROWS)

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
    @contextmanager
    def _building(self) -> Iterator[None]:
        if self._stopping.is_set():
            raise BuildCancelledError
        self.building = True
        try:
            yield
        finally:
            self.building = False

    def _build(self, sources: Sequence[Segment]) -> None:
        """A fresh segment from the live rows of ``sources``."""
        holder = self._holder
        with self._building():
            live = _LiveRows.of(holder, sources)
            n_rows = sum(rows.size for rows in live.plan)
            seg_id = -1
            if n_rows:
                seg_id = holder.new_segment_id()
                config = holder.config
                live.arrange(config)
                build_sealed_segment(holder.segment_dir(seg_id), live.vectors(), live.keys(),
                                     live.blobs(), config.metric, config.index,
                                     list(config.payload_indexes),
                                     cancelled=self._stopping.is_set, side=graphed(config),
                                     sparse=list(config.sparse))
                self._publish(seg_id, sources, live.plan, live.order)
            else:
                holder.swap(sources, None, live.plan)
        log.info("collection %s: built segment %d (%d rows) from %d source(s)",
                 holder.config.name, seg_id, n_rows, len(sources))

    def _publish(self, seg_id: int, sources: Sequence[Segment], rows: Sequence[np.ndarray],
                 order: np.ndarray | None) -> SealedSegment:
        """Open the written segment and swap it in; on any failure its directory
        goes, so a retry never leaves full-size copies behind."""
        holder = self._holder
        built: SealedSegment | None = None
        try:
            built = holder.open_sealed(seg_id)
            holder.swap(sources, built, rows, order)
        except BaseException:
            if built is not None:
                built.close()
            shutil.rmtree(holder.segment_dir(seg_id), ignore_errors=True)
            raise
        self.builds += 1
        return built

    def _extend(self, base: SealedSegment, added: Sequence[Segment]) -> None:
        """``base`` grown by the live rows of ``added``; a fresh build when base's
        graph cannot take them."""
        holder = self._holder
        with self._building():
            live = _LiveRows.of(holder, added)
            seg_id = holder.new_segment_id()
            config = holder.config
            live.arrange(config)  # the rows added; base's keep their order
            keys = live.keys()
            done = extend_sealed_segment(holder.segment_dir(seg_id), base, live.vectors(), keys,
                                         live.blobs(), config.index,
                                         list(config.payload_indexes),
                                         cancelled=self._stopping.is_set, side=graphed(config),
                                         sparse=list(config.sparse))
            if done:
                # Every base row keeps its number, tombstoned or not.
                n0 = base.n_rows
                order = None if live.order is None else np.concatenate(
                    [np.arange(n0), n0 + live.order])
                self._publish(seg_id, [base, *added], [np.arange(n0), *live.plan], order)
        if not done:
            self._build([base, *added])
            return
        log.info("collection %s: segment %d = segment %d (%d rows) + %d rows from %d "
                 "segment(s)", holder.config.name, seg_id, base.id, base.n_rows,
                 keys.shape[0], len(added))


class _LiveRows:
    """The live rows of some segments, in build order (what a build copies):
    the sources' live rows one after another, then, once ``arrange``d, laid out
    by the collection's tenant and principal fields (``order``: build row ``i``
    is row ``order[i]`` of that concatenation)."""

    def __init__(self, sources: Sequence[Segment], plan: list[np.ndarray]) -> None:
        self.sources = sources
        self.plan = plan
        self.order: np.ndarray | None = None
        self._blobs: list[bytes] | None = None

    @classmethod
    def of(cls, holder: SegmentHolder, sources: Sequence[Segment]) -> _LiveRows:
        with holder.reading():  # tombstones move under the exclusive lock
            return cls(sources, [np.flatnonzero(~seg.deleted[: seg.n_rows]) for seg in sources])

    def arrange(self, config: CollectionConfig) -> None:
        fields = layout_fields(config.layout)
        if fields:
            blobs = self._concatenated_blobs()
            self.order = layout_order(lambda i: blobs[i], len(blobs), fields,
                                      config.payload_indexes)

    def _pairs(self) -> zip[tuple[Segment, np.ndarray]]:
        return zip(self.sources, self.plan, strict=True)

    def keys(self) -> np.ndarray:
        keys = np.concatenate([seg.keys_view()[rows] for seg, rows in self._pairs()])
        return keys if self.order is None else keys[self.order]

    def vectors(self) -> np.ndarray:
        if self.order is None:
            return np.concatenate([seg.vectors_view()[rows] for seg, rows in self._pairs()])
        # Gathered straight into build order: one copy, not two.
        where = np.concatenate([np.full(rows.size, j) for j, (_, rows)
                                in enumerate(self._pairs())])[self.order]
        at = np.concatenate(self.plan)[self.order]
        first = next(seg for seg in self.sources)
        out = np.empty((at.size, first.vectors_view().shape[1]), np.float32)
        for j, (seg, _) in enumerate(self._pairs()):
            mine = np.flatnonzero(where == j)
            out[mine] = seg.vectors_view()[at[mine]]
        return out

    def blobs(self) -> list[bytes]:
        blobs = self._concatenated_blobs()
        return blobs if self.order is None else [blobs[i] for i in self.order.tolist()]

    def _concatenated_blobs(self) -> list[bytes]:
        if self._blobs is None:
            self._blobs = [seg.payload_bytes(r) for seg, rows in self._pairs()
                           for r in rows.tolist()]
        return self._blobs
