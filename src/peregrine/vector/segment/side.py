"""Per-segment indexes of the vectors a row carries besides its primary one.

``SideStore`` reads each row's side vectors from its record (``rows.py``) once,
as rows arrive (``catch_up``, the way payload field indexes follow a segment),
and keeps per name:

- ``DenseSide``: a float32 matrix and a presence mask, searched exactly with
  the same FAISS kernel as the primary vector's exact path;
- ``SparseSide``: inverted lists (CSC: rows and values grouped by index),
  scored in one compiled pass over the lists the query names
  (``sparse_kernel``: sums by blocks of rows, the top k through a heap).
  Rows that arrived since the lists were last sorted sit in an unsorted tail
  that is matched with ``np.isin``; the lists are re-sorted when the tail
  grows past a quarter of them, so a write is searchable at once and sorting
  costs O(log n) per row over time.

Only rows sharing at least one index with a sparse query are hits (Qdrant's
rule: a zero overlap is no match, not a score of 0).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from peregrine.vector.segment.kernels import F32, I64, subset_top_k, top_k
from peregrine.vector.segment.payload_index import Mask
from peregrine.vector.segment.rows import SideVector, side_vectors
from peregrine.vector.segment.side_graph import SIDE_DIR, graph_file
from peregrine.vector.types import Metric, SparseVector

log = logging.getLogger(__name__)

_MIN_TAIL = 4096  # entries in the unsorted tail before the lists are re-sorted
_WIDEN_ROWS = 65_536  # compact rows widened to float32 per exact pass
_MULTI_CELLS = 1 << 22  # stored vectors x query vectors scored in one matrix product


class _Growing:
    """An append-only numpy buffer with amortised doubling."""

    def __init__(self, dtype: npt.DTypeLike, width: int = 0) -> None:
        self._width = width
        shape = (64, width) if width else (64,)
        self._data = np.empty(shape, dtype=dtype)
        self.size = 0

    def extend(self, values: np.ndarray) -> None:
        need = self.size + values.shape[0]
        if need > self._data.shape[0]:
            cap = max(need, 2 * self._data.shape[0])
            shape = (cap, self._width) if self._width else (cap,)
            grown = np.empty(shape, dtype=self._data.dtype)
            grown[: self.size] = self._data[: self.size]
            self._data = grown
        self._data[self.size:need] = values
        self.size = need

    @property
    def view(self) -> np.ndarray:
        return self._data[: self.size]

    @classmethod
    def holding(cls, values: np.ndarray) -> _Growing:
        """A buffer that starts as ``values`` (a saved side's arrays)."""
        out = cls(values.dtype, values.shape[1] if values.ndim == 2 else 0)
        out._data = values
        out.size = values.shape[0]
        return out


class DenseSide:
    """One named dense vector of a segment's rows, held as ``datatype`` (float32;
    float16 or uint8 to save memory, scored after widening to float32)."""

    def __init__(self, dim: int, datatype: str = "float32") -> None:
        self.dim = dim
        self._dtype = np.dtype(datatype)
        self._rows = _Growing(self._dtype, dim)  # one row per segment row (zeros if absent)
        self._present = _Growing(np.bool_)

    def add(self, rows: list[SideVector | None]) -> None:
        block = np.zeros((len(rows), self.dim), self._dtype)
        present = np.zeros(len(rows), np.bool_)
        for j, value in enumerate(rows):
            if isinstance(value, np.ndarray) and value.size == self.dim:
                block[j] = value
                present[j] = True
        self._rows.extend(block)
        self._present.extend(present)

    def present(self, n: int) -> Mask:
        return self._present.view[:n]

    def vector(self, row: int) -> F32 | None:
        if not self._present.view[row]:
            return None
        return np.asarray(self._rows.view[row], dtype=np.float32)

    def search(self, queries: F32, k: int, allowed: Mask | None, n: int,
               metric: Metric) -> tuple[F32, I64]:
        mask = self._present.view[:n]
        if allowed is not None:
            mask = mask & allowed[:n]
        rows = np.flatnonzero(mask)
        if self._dtype == np.float32:
            return subset_top_k(self._rows.view[:n], queries, rows, k, metric)
        # Compact rows: widened a block at a time, then the same exact kernel.
        best_s = np.empty((queries.shape[0], 0), np.float32)
        best_i = np.empty((queries.shape[0], 0), np.int64)
        for start in range(0, rows.size, _WIDEN_ROWS):
            block = rows[start:start + _WIDEN_ROWS]
            wide = self._rows.view[block].astype(np.float32)
            s, i = subset_top_k(wide, queries, np.arange(block.size, dtype=np.int64), k, metric)
            best_s = np.concatenate([best_s, s], axis=1)
            best_i = np.concatenate([best_i, block[i]], axis=1)
            s, pos = top_k(best_s, k)
            best_s, best_i = s, np.take_along_axis(best_i, pos, axis=1)
        return best_s, best_i


class MultiSide:
    """One named multivector of a segment's rows: each row holds a matrix."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._vecs = _Growing(np.float32, dim)  # every row's vectors, row after row
        self._offsets = _Growing(np.int64)  # row -> its first vector (n + 1 of them)
        self._offsets.extend(np.zeros(1, np.int64))

    def add(self, rows: list[SideVector | None]) -> None:
        mats = [v if isinstance(v, np.ndarray) and v.ndim == 2 and v.shape[1] == self.dim
                else None for v in rows]
        counts = np.fromiter((0 if m is None else m.shape[0] for m in mats), np.int64,
                             len(rows))
        present = [m for m in mats if m is not None]
        if present:
            self._vecs.extend(np.concatenate(present))
        self._offsets.extend(self._offsets.view[-1] + np.cumsum(counts))

    def present(self, n: int) -> Mask:
        offsets = self._offsets.view
        return offsets[1:n + 1] > offsets[:n]

    def vector(self, row: int) -> F32 | None:
        a, b = self._offsets.view[row], self._offsets.view[row + 1]
        return self._vecs.view[a:b] if b > a else None

    def search(self, queries: F32, k: int, allowed: Mask | None, n: int,
               metric: Metric) -> tuple[F32, I64]:
        """Top-k rows by MaxSim with the query matrix (``queries``, one vector per
        row): for each query vector the best dot product among the row's vectors,
        summed. Rows are scored in blocks, so memory stays bounded."""
        mask = self.present(n)
        if allowed is not None:
            mask = mask & allowed[:n]
        rows = np.flatnonzero(mask)
        if rows.size == 0:
            return np.empty((1, 0), np.float32), np.empty((1, 0), np.int64)
        offsets, vecs = self._offsets.view, self._vecs.view
        scores = np.empty(rows.size, np.float32)
        # Blocks of rows whose vectors times the query's stay under _MULTI_CELLS.
        ends = np.cumsum(offsets[rows + 1] - offsets[rows])
        per_block = max(1, _MULTI_CELLS // max(1, queries.shape[0]))
        start = 0
        while start < rows.size:
            base = ends[start - 1] if start else 0
            stop = max(start + 1, int(np.searchsorted(ends, base + per_block, side="right")))
            block = rows[start:stop]
            first, lens = offsets[block], offsets[block + 1] - offsets[block]
            runs = np.cumsum(lens) - lens
            entry = np.arange(int(lens.sum())) - np.repeat(runs, lens) + np.repeat(first, lens)
            sims = vecs[entry] @ queries.T  # (vectors of the block, query vectors)
            best = np.maximum.reduceat(sims, runs, axis=0)  # (rows, query vectors)
            scores[start:start + block.size] = best.sum(axis=1)
            start = stop
        best_s, pos = top_k(scores[None, :], k)
        return best_s, rows[pos[0]][None, :]


class SparseSide:
    """One sparse vector of a segment's rows, as inverted lists."""

    def __init__(self) -> None:
        self._rows = _Growing(np.int32)  # entries in arrival order (segment rows < 2^31)
        self._dims = _Growing(np.uint32)
        self._vals = _Growing(np.float32)
        self._offsets = _Growing(np.int64)  # row -> first entry (n + 1 once caught up)
        self._offsets.extend(np.zeros(1, np.int64))
        # The sorted part, replaced whole (one assignment) so that a reader
        # never mixes two generations of it.
        self._lists = _SortedLists(0, np.empty(0, np.uint32), np.zeros(1, np.int64),
                                   np.empty(0, np.int32), np.empty(0, np.float32))

    def add(self, rows: list[SideVector | None], first_row: int) -> None:
        sparse = [v if isinstance(v, SparseVector) else None for v in rows]
        counts = np.fromiter((0 if v is None else v.indices.size for v in sparse), np.int64,
                             len(rows))
        present = [v for v in sparse if v is not None and v.indices.size]
        if present:
            self._dims.extend(np.concatenate([v.indices for v in present]))
            self._vals.extend(np.concatenate([v.values for v in present]))
            self._rows.extend(np.repeat(np.arange(first_row, first_row + len(rows),
                                                  dtype=np.int32), counts))
        self._offsets.extend(self._offsets.view[-1] + np.cumsum(counts))

    def resort(self, force: bool = False) -> None:
        total = self._rows.size
        sorted_count = self._lists.count
        if total == sorted_count or (
                not force and total - sorted_count <= max(_MIN_TAIL, sorted_count // 4)):
            return
        dims = self._dims.view[:total]
        order = np.argsort(dims, kind="stable")
        keys, starts = np.unique(dims[order], return_index=True)
        self._lists = _SortedLists(total, keys, np.append(starts, total).astype(np.int64),
                                   self._rows.view[order], self._vals.view[:total][order])

    def vector(self, row: int) -> SparseVector | None:
        a, b = self._offsets.view[row], self._offsets.view[row + 1]
        if a == b:
            return None
        return SparseVector(self._dims.view[a:b].copy(), self._vals.view[a:b].copy())

    def present(self, n: int) -> Mask:
        offsets = self._offsets.view
        return offsets[1:n + 1] > offsets[:n]

    def save(self, path: Path) -> None:
        """Every row's entries, sorted (a sealed segment's side: no row follows)."""
        self.resort(force=True)
        lists = self._lists
        with path.open("wb") as f:
            np.savez(f, keys=lists.keys, starts=lists.starts, rows=lists.rows,
                     vals=lists.vals, offsets=self._offsets.view, dims=self._dims.view,
                     row_vals=self._vals.view)

    @classmethod
    def load(cls, path: Path, n: int) -> SparseSide:
        """A saved side of ``n`` rows. Every invariant the compiled loops rely on
        is checked (they index unchecked): a file that breaks one is a
        ``ValueError``, never a wrong read."""
        with np.load(path, allow_pickle=False) as f:
            a = {k: f[k] for k in ("keys", "starts", "rows", "vals", "offsets", "dims",
                                   "row_vals")}
        keys, starts, rows, vals = a["keys"], a["starts"], a["rows"], a["vals"]
        offsets, dims, row_vals = a["offsets"], a["dims"], a["row_vals"]
        total = dims.size
        if (keys.dtype != np.uint32 or starts.dtype != np.int64 or rows.dtype != np.int32
                or vals.dtype != np.float32 or offsets.dtype != np.int64
                or dims.dtype != np.uint32 or row_vals.dtype != np.float32):
            raise ValueError("unexpected dtypes")
        if not (keys.ndim == starts.ndim == rows.ndim == vals.ndim == offsets.ndim
                == dims.ndim == row_vals.ndim == 1):
            raise ValueError("arrays must be flat")
        if (starts.size != keys.size + 1 or rows.size != total or vals.size != total
                or row_vals.size != total or offsets.size != n + 1):
            raise ValueError("array lengths disagree")
        if starts[0] != 0 or starts[-1] != total or bool((np.diff(starts) <= 0).any()):
            raise ValueError("list starts are not increasing from 0 to the entries")
        if bool((keys[1:] <= keys[:-1]).any()):
            raise ValueError("indices are not strictly ascending")
        if offsets[0] != 0 or offsets[-1] != total or bool((np.diff(offsets) < 0).any()):
            raise ValueError("row offsets are not ascending from 0 to the entries")
        if total and (int(rows.min()) < 0 or int(rows.max()) >= n):
            raise ValueError("a list names a row outside the segment")
        falls = np.diff(rows) <= 0
        falls[starts[1:-1] - 1] = False  # a new list may start lower
        if bool(falls.any()):
            raise ValueError("a list's rows are not strictly ascending")
        side = cls()
        side._rows = _Growing.holding(np.repeat(np.arange(n, dtype=np.int32),
                                                np.diff(offsets)))
        side._dims = _Growing.holding(dims)
        side._vals = _Growing.holding(row_vals)
        side._offsets = _Growing.holding(offsets)
        side._lists = _SortedLists(total, keys, starts, rows, vals)
        return side

    def postings(self, dims: npt.NDArray[np.uint32]) -> SparseLists:
        """The lists of the query's indices (``dims``, ascending and unique): runs
        of the sorted lists, plus the matching entries of the unsorted tail
        grouped by index. Nothing is copied from the sorted lists."""
        from peregrine.vector.segment import sparse_kernel  # numba: loaded on first use

        lists = self._lists
        # One compiled signature: a read-only or strided array would compile another.
        dims = np.require(dims, np.uint32, ["C", "W"])
        lo, hi, query = sparse_kernel.lookup(lists.keys, lists.starts, dims)
        src = np.zeros(lo.size, np.uint8)
        tail_rows, tail_vals = lists.rows[:0], lists.vals[:0]
        # Rows are extended last on each add: entries below its size are whole.
        end = self._rows.size
        tail = self._dims.view[lists.count:end]
        if tail.size:
            where = np.flatnonzero(np.isin(tail, dims))
            if where.size:
                qpos = np.searchsorted(dims, tail[where])
                order = np.argsort(qpos, kind="stable")  # rows stay ascending per index
                where, qpos = where[order], qpos[order]
                tail_rows = self._rows.view[lists.count:end][where]
                tail_vals = self._vals.view[lists.count:end][where]
                firsts = np.flatnonzero(np.diff(qpos, prepend=-1))
                lo = np.concatenate([lo, firsts])
                hi = np.concatenate([hi, np.append(firsts[1:], where.size)])
                query = np.concatenate([query, qpos[firsts]])
                src = np.concatenate([src, np.ones(firsts.size, np.uint8)])
        return SparseLists(lo, hi, src, query, lists.rows, lists.vals, tail_rows, tail_vals)

    @staticmethod
    def doc_freq(lists: SparseLists, size: int, live: Mask | None,
                 n: int) -> npt.NDArray[np.int64]:
        """How many rows below ``n`` (live ones, when ``live`` is given) hold each
        of the query's ``size`` indices."""
        from peregrine.vector.segment import sparse_kernel

        if live is not None:  # the compiled loop reads live[row] unchecked
            n = min(n, live.size)
        return sparse_kernel.doc_freq(lists.lo, lists.hi, lists.src, lists.query, size,
                                      lists.rows, lists.tail_rows, n, _mask_arg(live),
                                      live is not None)

    @staticmethod
    def top(lists: SparseLists, weights: npt.NDArray[np.floating], k: int,
            allowed: Mask | None, n: int) -> tuple[F32, I64]:
        """Top-k rows below ``n`` (and ``allowed``) by the dot product of their
        entries with the per-index ``weights`` (the query's values, times IDF
        where it applies): one compiled pass (``sparse_kernel``)."""
        from peregrine.vector.segment import sparse_kernel

        if allowed is not None:  # the compiled loop reads allowed[row] unchecked
            n = min(n, allowed.size)
        k = min(k, int((lists.hi - lists.lo).sum()))  # its heap is k long
        scores, rows = sparse_kernel.top_k(
            lists.lo, lists.hi, lists.src,
            np.ascontiguousarray(np.asarray(weights, np.float64)[lists.query]),
            lists.rows, lists.vals, lists.tail_rows, lists.tail_vals, n,
            _mask_arg(allowed), allowed is not None, k)
        return scores[None, :], rows[None, :]


@dataclass(frozen=True, slots=True)
class _SortedLists:
    """Entries ``[0, count)`` of a ``SparseSide``, grouped by index: ``keys`` the
    distinct indices (ascending), ``starts`` their runs in ``rows``/``vals``."""

    count: int
    keys: npt.NDArray[np.uint32]
    starts: I64
    rows: npt.NDArray[np.int32]
    vals: npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class SparseLists:
    """A query's inverted lists in one segment: list ``i`` is the run
    ``[lo[i], hi[i])`` of the sorted entries (``src`` 0) or of the matching tail
    entries (``src`` 1), and holds the query's index number ``query[i]``."""

    lo: I64
    hi: I64
    src: npt.NDArray[np.uint8]
    query: I64
    rows: npt.NDArray[np.int32]
    vals: npt.NDArray[np.float32]
    tail_rows: npt.NDArray[np.int32]
    tail_vals: npt.NDArray[np.float32]


_NO_MASK = np.zeros(1, np.bool_)


def _mask_arg(mask: Mask | None) -> Mask:
    """A mask for the compiled loops, which take an array either way."""
    return _NO_MASK if mask is None else np.ascontiguousarray(mask, np.bool_)


class SideStoreSlot:
    """A segment's ``SideStore``, made on first use and caught up on each."""

    def __init__(self) -> None:
        self._store: SideStore | None = None
        self._lock = threading.Lock()

    def get(self, dense: dict[str, tuple[int, str]], sparse: list[str],
            multi: dict[str, int] | None, blob_of: Callable[[int], bytes],
            n_rows: int, saved: Path | None = None) -> SideStore:
        """``saved``: a sealed segment's directory, whose sparse sides are loaded
        from their files (``save_sparse_sides``) rather than decoded from every
        record."""
        store = self._store
        if store is None:
            with self._lock:
                if self._store is None:
                    fresh = SideStore(dense, sparse, multi)
                    if saved is not None:
                        fresh.preload(load_sparse_sides(saved, sparse, n_rows), n_rows)
                    self._store = fresh
                store = self._store
        store.catch_up(blob_of, n_rows)
        return store


class SideStore:
    """Every side vector of one segment, caught up with its rows."""

    def __init__(self, dense: dict[str, tuple[int, str]], sparse: list[str],
                 multi: dict[str, int] | None = None) -> None:
        self.dense = {name: DenseSide(dim, dtype) for name, (dim, dtype) in dense.items()}
        self.sparse = {name: SparseSide() for name in sparse}
        self.multi = {name: MultiSide(dim) for name, dim in (multi or {}).items()}
        self.rows = 0
        self._lock = threading.Lock()
        self._loaded: set[str] = set()  # sparse sides loaded whole, up to _loaded_rows
        self._loaded_rows = 0

    def preload(self, sides: dict[str, SparseSide], n_rows: int) -> None:
        """Sparse sides that already hold rows [0, n_rows) (loaded from a sealed
        segment's files); when every side is one, nothing is decoded."""
        self.sparse.update(sides)
        self._loaded = set(sides)
        self._loaded_rows = n_rows

    def catch_up(self, blob_of: Callable[[int], bytes], n_rows: int) -> None:
        if n_rows <= self.rows:
            return
        with self._lock:
            start = self.rows
            if not self.dense and not self.multi and self._loaded == set(self.sparse):
                start = max(start, min(n_rows, self._loaded_rows))
            for first in range(start, n_rows, 8192):
                stop = min(n_rows, first + 8192)
                decoded = [side_vectors(blob_of(row)) for row in range(first, stop)]
                for name, dense in self.dense.items():
                    dense.add([d.get(name) for d in decoded])
                for name, sparse in self.sparse.items():
                    if name not in self._loaded or first >= self._loaded_rows:
                        sparse.add([d.get(name) for d in decoded], first)
                for name, multi in self.multi.items():
                    multi.add([d.get(name) for d in decoded])
            for sparse in self.sparse.values():
                sparse.resort()
            # Last: a reader that sees the rows counted (and skips the lock) must
            # find every structure complete, the sorted lists included.
            self.rows = n_rows

    def vectors(self, row: int) -> dict[str, F32 | SparseVector]:
        out: dict[str, F32 | SparseVector] = {}
        for name, dense in self.dense.items():
            if (v := dense.vector(row)) is not None:
                out[name] = v
        for name, sparse in self.sparse.items():
            if (s := sparse.vector(row)) is not None:
                out[name] = s
        for name, multi in self.multi.items():
            if (m := multi.vector(row)) is not None:
                out[name] = m
        return out


def _sparse_file(directory: Path, name: str) -> Path:
    return directory / SIDE_DIR / f"{graph_file(name)}.sparse.npz"


def save_sparse_sides(directory: Path, names: Sequence[str],
                      blob_of: Callable[[int], bytes], n: int) -> None:
    """Write the sparse vectors of a segment being built (rows [0, n)) as saved
    sides, ``side/<name hash>.sparse.npz``: opening the segment then loads the
    sorted lists instead of decoding every record (seconds at 200k rows)."""
    if not names or n == 0:
        return
    store = SideStore({}, list(names))
    store.catch_up(blob_of, n)
    (directory / SIDE_DIR).mkdir(exist_ok=True)
    for name, side in store.sparse.items():
        side.save(_sparse_file(directory, name))


def load_sparse_sides(directory: Path, names: Sequence[str], n: int) -> dict[str, SparseSide]:
    """The saved sparse sides of a sealed segment; one missing (a segment built
    before they were saved) or damaged is left out, and rebuilt from the records."""
    out: dict[str, SparseSide] = {}
    for name in names:
        path = _sparse_file(directory, name)
        if not path.exists():
            continue
        try:
            out[name] = SparseSide.load(path, n)
        except Exception as exc:  # any damage (a bad zip, a short read): decode instead
            log.warning("segment %s: sparse vector %r: %s is unreadable (%s); rebuilding it "
                        "from the records", directory.name, name, path.name, exc)
    return out


_warming = threading.Event()  # a warm-up started in this process


def warm_in_background() -> None:
    """Load the compiled sparse loops (numba, from its disk cache; compiled when
    the cache is missing or stale: seconds) on a daemon thread, once per process:
    a collection with sparse vectors opened by a server calls it, so that its
    first sparse query does not wait for them."""
    if _warming.is_set():
        return
    _warming.set()

    def run() -> None:
        try:
            from peregrine.vector.segment import sparse_kernel

            sparse_kernel.warm()
        except Exception:  # the first query compiles them instead
            log.exception("warming the sparse search loops failed")

    threading.Thread(target=run, name="sparse-warm", daemon=True).start()
