"""Sealed segments: immutable rows on disk with a FAISS HNSW index.

Layout of a segment directory (all written to ``<dir>.tmp`` first and renamed,
so a crash never leaves a half-built segment that looks valid)::

    meta.json            rows, dim, metric, quantization, graph codes
    vectors.npy          float32 rows (memory-mapped: exact scans, rescoring, retrieve)
    keys.npy             17-byte point keys per row
    key_order.npy        argsort of keys (id lookups by binary search)
    payload.bin          concatenated row records (payload JSON + side vectors)
    payload_offsets.npy  uint64 offsets into payload.bin (n + 1)
    index.faiss          HNSW graph over float16, float32 or int8 copies of the rows
    deleted.npy          tombstones; the only file rewritten after sealing
    fields/<n>.npz       persisted indexes of declared payload fields

Why FAISS: its HNSW takes an ``IDSelectorBitmap`` evaluated in C++ during
graph traversal (native filtered search) and offers scalar quantisation; see
docs/engine.md for the measurements against usearch and hnswlib.

Graph codes: a graph walk reads ~1000 scattered vectors per query, so its
cost is memory traffic. Unless int8 quantisation was asked for, the graph
holds float16 copies of the rows (half the bytes per visited node, ~15%
faster walks at the same recall on 200k x 384, half the index's RAM) and the
hits it returns are rescored exactly from the float32 rows, so scores are
those of the stored vectors. Rows that float16 cannot carry faithfully (out
of its range, or too small for its precision) get a float32 graph instead.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import threading
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

import faiss as _faiss
import numpy as np
import numpy.typing as npt
import orjson

from peregrine.core.errors import StorageError
from peregrine.core.fsio import write_atomic_with
from peregrine.runtime import hugepages
from peregrine.vector.ids import KEY_DTYPE, KEY_WIDTH, KeyArray, PointId, decode_keys
from peregrine.vector.segment.kernels import F32, I64, faiss_metric, score_block, subset_top_k
from peregrine.vector.segment.mutable import exact_search, mark_deleted
from peregrine.vector.segment.nested import NestedView, cached_view
from peregrine.vector.segment.payload_index import FieldIndex, Mask
from peregrine.vector.segment.rows import LACKING, payload_part, side_vectors
from peregrine.vector.segment.side import SideStore, SideStoreSlot
from peregrine.vector.segment.side_graph import SideGraph, SideGraphs
from peregrine.vector.types import IndexConfig, Metric, Quantization

# FAISS ships partial stubs that miss much of the SWIG surface (search
# parameters, selectors); treat the module as dynamically typed.
faiss: Any = _faiss


_UNREAD = object()  # a lazily computed attribute not computed yet


class GraphCodes(StrEnum):
    """What the HNSW graph stores per row (the rows themselves stay float32)."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"  # exact rescoring of the k hits
    INT8 = "int8"  # oversampled by rescore_factor, then rescored


class BuildCancelledError(Exception):
    """A segment build stopped because its collection is closing."""


def field_file(path: str) -> str:
    return hashlib.sha1(path.encode()).hexdigest()[:16] + ".npz"


class SealedSegment:
    def __init__(self, segment_id: int, directory: Path, metric: Metric, config: IndexConfig):
        self.id = segment_id
        self.directory = directory
        self.metric = metric
        self.config = config
        self._payload_file: BinaryIO | None = None
        self._vectors_fd = -1
        self._payload_map: mmap.mmap | bytes = b""
        try:
            self._load(directory)
        except Exception as exc:
            self.close()
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"segment {directory.name} is unreadable: "
                               f"{type(exc).__name__}: {exc}") from None
        self._params: dict[int, Any] = {}
        self._fields: dict[str, FieldIndex] = {}
        self._fields_lock = threading.Lock()
        self._side = SideStoreSlot()
        self._side_graphs = SideGraphs(directory)
        self._lacking: Mask | object | None = _UNREAD
        self._nested: dict[str, NestedView] = {}
        fields_dir = directory / "fields"
        self._field_files = {p.name for p in fields_dir.iterdir()} if fields_dir.exists() else set()

    def _load(self, directory: Path) -> None:
        """Read the files and check that they describe one consistent segment."""
        meta = orjson.loads((directory / "meta.json").read_bytes())
        self._n = n = int(meta["rows"])
        self.dim = dim = int(meta["dim"])
        if n < 0 or not 1 <= dim <= 65_536:
            raise StorageError(f"segment {directory.name}: {n} rows of dimension {dim}")
        if meta.get("metric", self.metric.value) != self.metric.value:
            raise StorageError(f"segment {directory.name} was built for {meta['metric']!r}, "
                               f"the collection uses {self.metric.value!r}")
        # Segments written before graph codes were recorded hold float32 or int8.
        self.codes = GraphCodes(meta.get("codes") or (
            GraphCodes.INT8 if meta["quantization"] == Quantization.INT8.value
            else GraphCodes.FLOAT32))
        # Memory-mapped, seen as a plain ndarray: np.memmap's indexing wraps every
        # result in another memmap, which costs more than rescoring's gather.
        mapped = np.load(directory / "vectors.npy", mmap_mode="r")
        assert isinstance(mapped.base, mmap.mmap)  # np.memmap's buffer is its mmap
        self._vectors_map = mapped.base
        self._vectors: F32 = np.asarray(mapped)
        self._vectors_offset = int(mapped.offset)
        self._vectors_fd = os.open(directory / "vectors.npy", os.O_RDONLY)
        self._keys: KeyArray = np.load(directory / "keys.npy")
        self._key_order: I64 = np.load(directory / "key_order.npy")
        self._offsets = np.load(directory / "payload_offsets.npy")
        self.deleted: Mask = np.load(directory / "deleted.npy")
        payload_path = directory / "payload.bin"
        payload_bytes = payload_path.stat().st_size
        _expect(directory, "vectors.npy", self._vectors, (n, dim), np.float32)
        _expect(directory, "keys.npy", self._keys, (n,), KEY_DTYPE)
        _expect(directory, "key_order.npy", self._key_order, (n,), np.int64)
        _expect(directory, "payload_offsets.npy", self._offsets, (n + 1,), np.uint64)
        _expect(directory, "deleted.npy", self.deleted, (n,), np.bool_)
        if n and (int(self._key_order.min()) < 0 or int(self._key_order.max()) >= n):
            raise StorageError(f"segment {directory.name}: key_order.npy points outside it")
        if int(self._offsets[0]) != 0 or int(self._offsets[-1]) != payload_bytes or (
                n and bool((np.diff(self._offsets.astype(np.int64)) < 0).any())):
            raise StorageError(f"segment {directory.name}: payload offsets do not fit "
                               "payload.bin")
        self._sorted_keys: KeyArray = self._keys[self._key_order]
        if n > 1 and bool((self._sorted_keys[1:] < self._sorted_keys[:-1]).any()):
            raise StorageError(f"segment {directory.name}: key_order.npy does not sort the keys")
        self._payload_file = open(payload_path, "rb")  # noqa: SIM115 - lives with the segment
        if payload_bytes:
            self._payload_map = mmap.mmap(self._payload_file.fileno(), 0, access=mmap.ACCESS_READ)
        self.index = faiss.read_index(str(directory / "index.faiss"))
        if int(self.index.ntotal) != n or int(self.index.d) != dim:
            raise StorageError(f"segment {directory.name}: its index holds "
                               f"{self.index.ntotal} vectors of dimension {self.index.d}")
        kind = faiss.downcast_index(self.index)
        expected = faiss.IndexHNSWFlat if self.codes is GraphCodes.FLOAT32 else faiss.IndexHNSWSQ
        if not isinstance(kind, expected) or int(self.index.metric_type) != faiss_metric(
                self.metric):
            raise StorageError(f"segment {directory.name}: its index is a "
                               f"{type(kind).__name__}, not the HNSW graph meta.json describes")
        hugepages.back_with_huge_pages(hugepages.index_buffers(self.index, faiss))
        self.n_deleted = int(np.count_nonzero(self.deleted))
        self._norms: F32 | None = None
        # All-integer ids (tag byte 0) as one uint64 column, decoded once; None
        # when UUIDs are present, and then every lookup decodes its own keys.
        raw = self._keys.view(np.uint8).reshape(-1, KEY_WIDTH)
        self._int_ids: npt.NDArray[np.uint64] | None = (
            None if raw[:, 0].any() else raw[:, 1:9].copy().view(">u8").reshape(-1)
            .astype(np.uint64))

    @property
    def n_rows(self) -> int:
        return self._n

    def keys_view(self) -> KeyArray:
        return self._keys

    def tombstone(self, rows: I64) -> int:
        return mark_deleted(self, rows)

    def vectors_view(self) -> F32:
        return self._vectors

    def lookup(self, keys: KeyArray) -> tuple[I64, I64]:
        if self._n == 0 or keys.size == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        # A segment extended with newer versions of its points holds a key more
        # than once (at most one of its rows live), hence both ends.
        lo = np.searchsorted(self._sorted_keys, keys, side="left")
        hi = np.searchsorted(self._sorted_keys, keys, side="right")
        counts = hi - lo
        if int(counts.max()) <= 1:
            which = np.flatnonzero(counts)
            pos = lo[which]
        else:
            which = np.repeat(np.arange(keys.size), counts)
            first = np.repeat(np.cumsum(counts) - counts, counts)
            pos = np.repeat(lo, counts) + (np.arange(which.size) - first)
        rows = self._key_order[pos]
        live = ~self.deleted[rows]
        return which[live].astype(np.int64), rows[live].astype(np.int64)

    def payload_offsets(self) -> npt.NDArray[np.uint64]:
        """Offsets of each row's payload in ``payload.bin`` (n + 1 of them)."""
        return self._offsets  # type: ignore[no-any-return]

    def payload_bytes(self, row: int) -> bytes:
        start, stop = int(self._offsets[row]), int(self._offsets[row + 1])
        return bytes(self._payload_map[start:stop])

    def point_ids(self, rows: I64) -> list[PointId]:
        if self._int_ids is None:
            return decode_keys(self._keys[rows])
        return self._int_ids[rows].tolist()  # type: ignore[no-any-return]

    def payloads(self, rows: I64) -> list[dict[str, Any] | None]:
        data = self._payload_map
        starts = self._offsets[rows].tolist()
        stops = self._offsets[rows + 1].tolist()
        return [orjson.loads(payload_part(data[a:b]))
                for a, b in zip(starts, stops, strict=True)]

    def payload(self, row: int) -> dict[str, Any] | None:
        return orjson.loads(payload_part(self.payload_bytes(row)))  # type: ignore[no-any-return]

    def nested_view(self, key: str) -> NestedView:
        """The objects of the arrays at ``key``, as rows (``nested.py``), built in
        memory on first use."""
        return cached_view(self._nested, self._fields_lock, key, self.payload, self._n)

    def side_store(self, dense: dict[str, tuple[int, str]], sparse: list[str],
                   multi: dict[str, int] | None = None) -> SideStore:
        """Made on first use: sparse sides loaded from the segment's saved files
        (``side.save_sparse_sides``), the rest decoded from the rows' records."""
        return self._side.get(dense, sparse, multi, self.payload_bytes, self._n,
                              saved=self.directory)

    def lacking_primary(self) -> Mask | None:
        """Which rows have no primary vector, from their records' lead bytes (one
        gather over the payload file, once); None when every row has it."""
        found = self._lacking
        if found is _UNREAD:
            starts = self._offsets[:-1].astype(np.int64)
            sized = self._offsets[1:].astype(np.int64) > starts
            lead = np.zeros(self._n, np.uint8)
            if sized.any():
                data = np.frombuffer(self._payload_map, np.uint8)
                lead[sized] = data[starts[sized]]
                del data  # the map must have no exported buffer when it closes
            mask = lead == LACKING
            found = self._lacking = mask if mask.any() else None
        return found  # type: ignore[return-value]

    def side_graph(self, name: str, dim: int) -> SideGraph | None:
        """Named dense vector ``name``'s HNSW graph, saved with the segment when it
        was built (``side_graph.py``); None for a segment built without one."""
        return self._side_graphs.get(name, dim, self._n)

    def field_index(self, path: str) -> FieldIndex:
        index = self._fields.get(path)
        if index is not None:
            return index
        with self._fields_lock:
            index = self._fields.get(path)
            if index is None:
                name = field_file(path)
                if name in self._field_files:
                    index = FieldIndex.load(self.directory / "fields" / name)
                if index is None:
                    # Undeclared field (or saved in an older format): index it
                    # once, in memory, on first use.
                    index = FieldIndex(path)
                    index.catch_up(self.payload, self._n)
                self._fields[path] = index
        return index

    def check_keys(self) -> None:
        """At most one live row per point id (for a segment from outside: an
        extended segment may hold a key twice, all but one row tombstoned)."""
        if self._n < 2:
            return
        same = self._sorted_keys[1:] == self._sorted_keys[:-1]
        if not same.any():
            return
        live = ~self.deleted[self._key_order]
        run_start = np.flatnonzero(np.concatenate([[True], ~same]))
        live_per_key = np.add.reduceat(live.astype(np.int64), run_start)
        if (live_per_key > 1).any():
            raise StorageError(f"segment {self.directory.name} holds a point id twice")

    def check_payloads(self) -> None:
        """Every payload parses to a JSON object or null (for a segment from outside)."""
        for row in range(self._n):
            try:
                blob = self.payload_bytes(row)
                side_vectors(blob)
                value = orjson.loads(payload_part(blob))
            except (orjson.JSONDecodeError, StorageError):
                value = ""
            if value is not None and not isinstance(value, dict):
                raise StorageError(f"segment {self.directory.name}: payload of row {row} is "
                                   "not a JSON object")

    def persist_deleted(self) -> None:
        write_atomic_with(self.directory / "deleted.npy",
                          lambda fh: np.save(fh, self.deleted))

    def _l2_norms(self) -> F32:
        if self._norms is None:
            self._norms = np.einsum("ij,ij->i", self._vectors, self._vectors).astype(np.float32)
        return self._norms

    def search_rows(self, queries: F32, k: int, rows: I64) -> tuple[F32, I64]:
        """Exact top-k among the listed (live) rows, scored in place."""
        return subset_top_k(self._vectors, queries, rows, k, self.metric)

    def search(
        self, queries: F32, k: int, allowed: Mask | None, ef: int, exact: bool
    ) -> tuple[F32, I64]:
        if exact:
            norms = self._l2_norms() if self.metric is Metric.L2 else None
            return exact_search(self._vectors, queries, k, self.metric, allowed, norms)
        selector = None
        bitmap = None
        ef_eff = max(ef, k)
        if allowed is not None:
            n_allowed = int(np.count_nonzero(allowed))
            if n_allowed <= self.config.full_scan_threshold:
                # Planner: a small subset is scanned exactly (recall 1.0, and
                # cheaper than a graph walk that rejects most of its visits).
                return exact_search(self._vectors, queries, k, self.metric, allowed)
            bitmap = np.packbits(allowed, bitorder="little")
            selector = faiss.IDSelectorBitmap(self._n, faiss.swig_ptr(bitmap))
            # The walk discards rejected nodes; widen the beam by the selectivity.
            ef_eff = int(min(ef_eff * self._n / n_allowed, max(ef_eff, 4 * ef_eff)))
        fetch = k
        if self.codes is GraphCodes.INT8:
            fetch = k * self.config.rescore_factor
            ef_eff = max(ef_eff, fetch)
        if selector is None:
            params = self._params.get(ef_eff)
            if params is None:  # read-only during a search, so shared by threads
                # Set up completely before publishing: a thread that found a
                # half-made object would search with FAISS's default beam (16),
                # which returns fewer than k hits when k > 16.
                fresh = faiss.SearchParametersHNSW()
                fresh.efSearch = ef_eff
                params = self._params.setdefault(ef_eff, fresh)
        else:
            params = faiss.SearchParametersHNSW()
            params.efSearch = ef_eff
            params.sel = selector
        fetch = min(fetch, self._n)
        distances, labels = self.index.search(queries, fetch, params=params)
        del bitmap  # kept alive until the search above has returned
        labels = labels.astype(np.int64, copy=False)
        if (labels[:, : min(k, self._n)] < 0).any():
            # The walk ran out of (admissible) nodes before finding k, as a
            # sparse filter or a poorly connected graph can make it: never
            # return fewer results than exist, fall back to the exact scan.
            return exact_search(self._vectors, queries, k, self.metric, allowed)
        if self.codes is not GraphCodes.FLOAT32:
            return self._rescore(queries, labels, k)
        scores = distances if self.metric.higher_is_better else -distances
        return np.asarray(scores, dtype=np.float32), labels

    def _read_rows(self, rows: list[int]) -> F32:
        """Rows read with ``pread``, not through the memory map.

        A page fault on the map maps a whole page-cache folio (up to 2 MB), so
        rescoring a few rows per query through it made the entire vector
        file resident in this process within a few hundred queries: the
        float32 copy that float16/int8 graphs exist to keep out of memory.
        """
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        view = out.reshape(-1).view(np.uint8).data
        size = self.dim * 4
        fd, base = self._vectors_fd, self._vectors_offset
        for j, row in enumerate(rows):
            if os.preadv(fd, [view[j * size : (j + 1) * size]], base + row * size) != size:
                raise StorageError(f"segment {self.directory.name}: vectors.npy is shorter "
                                   "than its header says")
        return out

    def _rescore(self, queries: F32, labels: I64, k: int) -> tuple[F32, I64]:
        """Exact float32 scores of the graph's candidates (-1: none), best k first.

        Per query: one row gather and the shared scoring kernel, then a Python
        sort of the few candidates. Right after a graph walk has flushed the CPU
        caches every further numpy call costs microseconds, so this keeps to
        the ones that do real work.
        """
        best_s: list[list[float]] = []
        best_i: list[list[int]] = []
        queries = np.ascontiguousarray(queries)  # same rounding whatever the caller's layout
        for qi, cand in enumerate(labels.tolist()):
            ids = [i for i in cand if i >= 0]
            rows = self._read_rows(ids)
            scores = score_block(rows, queries[qi : qi + 1], self.metric)[0].tolist()
            # Stable, like the exact scan: equal scores keep the graph's order.
            order = sorted(range(len(ids)), key=scores.__getitem__, reverse=True)[:k]
            pad = k - len(order)
            best_s.append([scores[o] for o in order] + [-np.inf] * pad)
            best_i.append([ids[o] for o in order] + [-1] * pad)
        return np.array(best_s, dtype=np.float32), np.array(best_i, dtype=np.int64)

    def evict_vectors(self) -> None:
        """Drop the vector file's pages from this process and the page cache, so
        the next reads come from disk: what a segment larger than memory meets
        (benchmarks of the row layout, ``bench/tenant_bench.py``)."""
        self._vectors_map.madvise(mmap.MADV_DONTNEED)
        if self._vectors_fd >= 0:
            os.posix_fadvise(self._vectors_fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def close(self) -> None:
        if self._vectors_fd >= 0:
            os.close(self._vectors_fd)
            self._vectors_fd = -1
        if isinstance(self._payload_map, mmap.mmap):
            self._payload_map.close()
        if self._payload_file is not None:
            self._payload_file.close()


def _expect(directory: Path, name: str, array: np.ndarray[Any, Any], shape: tuple[int, ...],
            dtype: Any) -> None:
    if array.shape != shape or array.dtype != np.dtype(dtype):
        raise StorageError(f"segment {directory.name}: {name} is {array.dtype}{list(array.shape)}, "
                           f"expected {np.dtype(dtype)}{list(shape)}")
