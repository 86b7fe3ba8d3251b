"""HNSW graphs of a sealed segment's named dense vectors.

The primary vector's graph is ``index.faiss``; each other named dense vector
(not a multivector) gets its own graph in ``side/<name hash>.faiss``, with
``.rows.npy`` mapping graph ids to segment rows (a point may lack the vector,
so the graph holds only the rows that carry it). They are written where the
primary graph is, by the optimizer's builds: at seal time, and grown from the
base segment's graph when a build extends it (``build.py``), so a sealed
segment answers a named vector's query with a graph walk instead of a scan of
every row. The codes follow the vector's ``datatype``: float32 rows, float16
codes, or uint8 rows held exactly (FAISS's 8-bit direct codes), or int8 codes
when its quantization asks for them; Manhattan keeps float32 rows (FAISS's
scalar quantiser has no L1). The graph takes the vector's own ``m`` and
``ef_construction`` where it has them, else the collection's. A walk's hits are
rescored exactly from the rows' records (int8 walks fetch ``rescore_factor``
times more first), so scores are the same as the exact path's.

A segment written before these graphs existed has no ``side/`` entry for the
vector and is searched exactly, as before.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import faiss as _faiss
import numpy as np

from peregrine.vector.segment.kernels import F32, I64, faiss_metric
from peregrine.vector.segment.payload_index import Mask
from peregrine.vector.segment.rows import side_vectors
from peregrine.vector.types import DenseSpec, IndexConfig, Metric, Quantization

faiss: Any = _faiss  # untyped SWIG bindings (as sealed.py)
log = logging.getLogger(__name__)

SIDE_DIR = "side"
# An int8 graph is grown only when its ranges were trained on this many rows
# (as the primary's, ``build.INT8_MIN_TRAINED_ROWS``).
INT8_MIN_TRAINED_ROWS = 20_000
_DECODE_ROWS = 8192

AddRows = Callable[[Any, F32], None]


def graph_file(name: str) -> str:
    """The file stem of vector ``name``'s graph: names are any UTF-8 up to 255 bytes."""
    return hashlib.sha1(name.encode()).hexdigest()[:16]


def _new_graph(spec: DenseSpec, config: IndexConfig, vectors: F32) -> Any:
    """An empty graph for ``spec`` (its own ``m``/``ef_construction`` where set),
    with codes by datatype, or int8 codes trained on ``vectors``."""
    m = spec.m or config.m
    index: Any
    if spec.quantization is Quantization.INT8:
        index = faiss.IndexHNSWSQ(spec.dim, faiss.ScalarQuantizer.QT_8bit, m,
                                  faiss_metric(spec.metric))
        index.train(vectors)
    elif spec.datatype == "float32" or spec.metric is Metric.L1:
        index = faiss.IndexHNSWFlat(spec.dim, m, faiss_metric(spec.metric))
    else:
        qtype = (faiss.ScalarQuantizer.QT_8bit_direct if spec.datatype == "uint8"
                 else faiss.ScalarQuantizer.QT_fp16)
        index = faiss.IndexHNSWSQ(spec.dim, qtype, m, faiss_metric(spec.metric))
        index.train(np.zeros((1, spec.dim), np.float32))  # direct codes: nothing to learn
    index.hnsw.efConstruction = spec.ef_construction or config.ef_construction
    return index


def _same_settings(index: Any, spec: DenseSpec, config: IndexConfig) -> bool:
    """Whether a base segment's graph was built as ``spec`` asks now (links per
    node and codes): an extension grows it only then."""
    probe = _new_graph(spec, config, np.zeros((1, spec.dim), np.float32))
    if index.hnsw.nb_neighbors(1) != probe.hnsw.nb_neighbors(1):
        return False
    mine, wanted = faiss.downcast_index(index.storage), faiss.downcast_index(probe.storage)
    if type(mine).__name__ != type(wanted).__name__:
        return False
    return not hasattr(wanted, "sq") or mine.sq.qtype == wanted.sq.qtype


def _present(blob_of: Callable[[int], bytes], name: str, dim: int, start: int, stop: int
             ) -> tuple[I64, F32]:
    """The rows in [start, stop) that carry vector ``name``, and those vectors."""
    rows: list[int] = []
    vectors: list[np.ndarray] = []
    for first in range(start, stop, _DECODE_ROWS):
        for row in range(first, min(stop, first + _DECODE_ROWS)):
            value = side_vectors(blob_of(row)).get(name)
            if isinstance(value, np.ndarray) and value.ndim == 1 and value.size == dim:
                rows.append(row)
                vectors.append(value)
    if not rows:
        return np.empty(0, np.int64), np.empty((0, dim), np.float32)
    return np.asarray(rows, np.int64), np.ascontiguousarray(np.stack(vectors), np.float32)


def write_side_graphs(target: Path, specs: Mapping[str, DenseSpec], config: IndexConfig,
                      blob_of: Callable[[int], bytes], n: int, add: AddRows,
                      base: Path | None = None, n0: int = 0) -> None:
    """Write a graph per vector of ``specs`` over rows [0, n) into ``target/side``.
    With ``base`` (a segment directory whose rows are this one's first ``n0``),
    a vector's graph there is read and grown by rows [n0, n); without one it
    is built from every row. ``add(index, vectors)`` adds rows the way the
    primary graph's build does (in chunks, stopping on a cancel)."""
    if not specs or n == 0:
        return
    (target / SIDE_DIR).mkdir(exist_ok=True)
    for name, spec in specs.items():
        stem = graph_file(name)
        old = None if base is None else base / SIDE_DIR / f"{stem}.faiss"
        index = None
        if old is not None and old.exists():
            index = faiss.read_index(str(old))
            if not _same_settings(index, spec, config) or (
                    spec.quantization is Quantization.INT8
                    and index.ntotal < INT8_MIN_TRAINED_ROWS):
                # Settings changed since, or int8 ranges learnt from too few rows
                # (they would clip what follows): build it anew from every row.
                index = None
        if index is not None:
            known = np.load(base / SIDE_DIR / f"{stem}.rows.npy")  # type: ignore[operator]
            rows, vectors = _present(blob_of, name, spec.dim, n0, n)
        else:
            rows, vectors = _present(blob_of, name, spec.dim, 0, n)
            if rows.size == 0:
                continue  # no row carries it: no graph (its queries scan nothing)
            index = _new_graph(spec, config, vectors)
            known = np.empty(0, np.int64)
        add(index, vectors)
        faiss.write_index(index, str(target / SIDE_DIR / f"{stem}.faiss"))
        np.save(target / SIDE_DIR / f"{stem}.rows.npy", np.concatenate([known, rows]))


class SideGraph:
    """One named vector's graph in a sealed segment (read-only once loaded)."""

    def __init__(self, index: Any, rows: I64) -> None:
        self.index = index
        self.rows = rows  # graph id -> segment row, ascending

    @classmethod
    def load(cls, directory: Path, name: str, n_rows: int, dim: int) -> SideGraph | None:
        """The saved graph, checked against its segment (``n_rows`` rows of vectors
        of ``dim``); None when there is none. A damaged one is logged and left
        out, so its vector's queries scan exactly instead of failing."""
        stem = graph_file(name)
        path = directory / SIDE_DIR / f"{stem}.faiss"
        if not path.exists():
            return None
        try:
            index = faiss.read_index(str(path))
            rows = np.load(directory / SIDE_DIR / f"{stem}.rows.npy")
            if rows.dtype != np.int64 or rows.ndim != 1 or index.ntotal != rows.size \
                    or index.d != dim or (rows.size and (
                        int(rows[0]) < 0 or int(rows[-1]) >= n_rows
                        or bool((np.diff(rows) <= 0).any()))):
                raise ValueError("graph and row map disagree with the segment")
        except (RuntimeError, ValueError, OSError) as exc:
            log.error("graph of vector %r in %s left out (scanned exactly): %s", name,
                      directory, exc)
            return None
        return cls(index, rows)

    def search(self, query: F32, k: int, allowed: Mask | None, ef: int,
               scan_below: int) -> I64 | None:
        """Up to ``k`` rows near ``query`` (one row) among ``allowed`` (a mask over
        the segment's rows; None: all). None asks the caller for the exact scan:
        when at most ``scan_below`` rows qualify (Qdrant's full_scan_threshold,
        cheaper than a walk that rejects most of its visits), or when the walk
        found fewer hits than exist (a sparse filter can strand it)."""
        size = self.rows.size
        ok = None if allowed is None else allowed[self.rows]
        n_ok = size if ok is None else int(np.count_nonzero(ok))
        if n_ok <= scan_below or n_ok == 0:
            return None
        params = faiss.SearchParametersHNSW()
        ef_eff = max(ef, k)
        bitmap = None
        if ok is not None and n_ok < size:
            bitmap = np.packbits(ok, bitorder="little")
            params.sel = faiss.IDSelectorBitmap(size, faiss.swig_ptr(bitmap))
            # The walk discards rejected nodes; widen the beam by the selectivity.
            ef_eff = int(min(ef_eff * size / n_ok, 4 * ef_eff))
        params.efSearch = ef_eff
        _, labels = self.index.search(query, min(k, n_ok), params=params)
        del bitmap  # alive until the search above returned
        found = labels[0]
        if (found < 0).any():
            return None
        rows: I64 = self.rows[found.astype(np.int64)]
        return rows


class SideGraphs:
    """A sealed segment's named-vector graphs, each loaded on first use."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._graphs: dict[str, SideGraph | None] = {}
        self._lock = threading.Lock()

    def get(self, name: str, dim: int, n_rows: int) -> SideGraph | None:
        if name in self._graphs:
            return self._graphs[name]
        with self._lock:
            if name not in self._graphs:
                self._graphs[name] = SideGraph.load(self._directory, name, n_rows, dim)
            return self._graphs[name]
