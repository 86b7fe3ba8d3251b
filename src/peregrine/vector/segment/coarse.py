"""A coarse partition (IVF) of the rows that have no graph yet.

Rows wait in the mutable segment, and in frozen ones until the optimizer has
indexed them. Scanning them exactly costs ~0.1 ms per 1,000 rows of 384-d
float32 at best, and ingest outruns the index build by 10x or more, so a
200k-row backlog made every query cost 70 ms for as long as it lasted. A
coarse partition bounds that: each row is assigned to the nearest of
``LISTS`` k-means centroids, and a query scores only the rows of its
``probes`` nearest lists, plus the few newest rows not assigned yet, which
are scanned exactly so that a write is searchable the moment it returns.

The centroids are trained once per collection, on the first
``TRAIN_ROWS`` rows, and shared by all its segments (``Centroids``).
Training and assignment run on one background thread (``_Worker``), never in
a writer's or a reader's path: a search that finds rows unassigned asks for
them to be assigned and scans them exactly meanwhile.

Probing follows the graph's beam width: ``probes = ef / PROBE_EF_PER_LIST``,
so asking for more recall buys it here too, and ``exact=true`` scans all.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import faiss as _faiss
import numpy as np
import numpy.typing as npt

from peregrine.vector.segment.kernels import F32

faiss: Any = _faiss
log = logging.getLogger(__name__)

LISTS = 1024
# Trained on this many rows (~10 per centroid: ~0.7 s of k-means on two busy
# cores, which an ingest's first seconds of backlog wait for); fewer rows are
# scanned exactly.
TRAIN_ROWS = 10_000
# ef per probed list. Measured on 180k real-text MiniLM vectors, 1 024 lists
# trained on 20k of them: probes 32 -> recall@10 0.915 (4.1% of the rows
# scored), 64 -> 0.949 (7.8%), 96 -> 0.966 (11.6%), 1.7-4.3 ms per query on
# two busy cores against ~70 ms for the full scan. At 0.75, ef 64 probes 85.
PROBE_EF_PER_LIST = 0.75
MIN_PROBES = 8
_KMEANS_ITERATIONS = 8
_KMEANS_SEED = 1234
_ASSIGN_CHUNK = 8192  # rows assigned per step: newly assigned rows show up at once


class _Worker:
    """One daemon thread running partition jobs for every collection."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="coarse-partition",
                                                daemon=True)
                self._thread.start()
        self._jobs.put(job)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            except Exception:  # a failed job leaves rows exact-scanned, never wrong
                log.exception("coarse partition job failed")


_WORKER = _Worker()


class Centroids:
    """The k-means centroids of one collection, trained once."""

    def __init__(self, dim: int, lists: int = LISTS) -> None:
        self.dim = dim
        self.lists = lists
        self.quantizer: Any = None  # an IndexFlatL2 over the centroids once trained
        self._lock = threading.Lock()

    @property
    def trained(self) -> bool:
        return self.quantizer is not None

    def train(self, sample: F32) -> None:
        with self._lock:
            if self.quantizer is not None:
                return
            kmeans = faiss.Kmeans(self.dim, self.lists, niter=_KMEANS_ITERATIONS,
                                  seed=_KMEANS_SEED, min_points_per_centroid=1,
                                  max_points_per_centroid=1 << 30)
            kmeans.train(np.ascontiguousarray(sample, dtype=np.float32))
            quantizer = faiss.IndexFlatL2(self.dim)
            quantizer.add(kmeans.centroids)
            self.quantizer = quantizer

    def nearest(self, rows: F32, count: int) -> npt.NDArray[np.int64]:
        _, lists = self.quantizer.search(np.ascontiguousarray(rows, dtype=np.float32), count)
        return lists  # type: ignore[no-any-return]


class CoarsePartition:
    """List ids of an append-only row array, assigned in the background."""

    def __init__(self, capacity: int, centroids: Centroids) -> None:
        self.centroids = centroids
        self._assign = np.empty(capacity, dtype=np.int32)
        self.assigned = 0  # rows [0, assigned) have list ids
        self._queued = False
        self._retired = False
        self._lock = threading.Lock()

    def retire(self) -> None:
        """Its segment is gone: a queued job for it returns at once."""
        self._retired = True

    @property
    def lists(self) -> int:
        return self.centroids.lists

    def request(self, vectors: F32, n: int) -> None:
        """Ask the worker to assign rows up to ``n`` (returns at once). Writers
        call it after each append, so an ingest is partitioned as it lands,
        not when the first search after it finds 200k rows unassigned."""
        if self.assigned < n and not self._queued:
            with self._lock:
                if not self._queued:
                    self._queued = True
                    _WORKER.submit(lambda: self._catch_up(vectors, n))

    def usable_rows(self, vectors: F32, n: int) -> int:
        """Rows with list ids now; asks the worker to assign the rest of ``n``."""
        self.request(vectors, n)
        return self.assigned if self.centroids.trained else 0

    def _catch_up(self, vectors: F32, n: int) -> None:
        try:
            centroids = self.centroids
            if self._retired:
                return
            if not centroids.trained:
                if n < TRAIN_ROWS:
                    return  # still small enough to scan; asked again later
                centroids.train(vectors[:TRAIN_ROWS])
            start = self.assigned
            while start < n and not self._retired:
                stop = min(n, start + _ASSIGN_CHUNK)
                self._assign[start:stop] = centroids.nearest(vectors[start:stop], 1)[:, 0]
                self.assigned = start = stop
        finally:
            with self._lock:
                self._queued = False

    def probes_for(self, ef: int) -> int:
        return int(min(self.lists, max(MIN_PROBES, round(ef / PROBE_EF_PER_LIST))))

    def candidates(self, query: F32, rows: int, probes: int) -> npt.NDArray[np.bool_]:
        """Mask over rows [0, rows) in the ``probes`` lists nearest to one query."""
        nearest = self.centroids.nearest(query[None, :], probes)[0]
        probed = np.zeros(self.lists, dtype=np.bool_)
        probed[nearest[nearest >= 0]] = True
        return probed[self._assign[:rows]]
