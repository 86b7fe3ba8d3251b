"""Writing sealed segment directories: from rows, or by extending another.

A build writes into ``<dir>.tmp`` and renames it, so ``<dir>`` either does not
exist or is whole. The graph is added in chunks sized to take about
``_BUILD_CHUNK_S`` each; ``cancelled`` is polled between them, so closing a
collection never waits for a large build: the half-built directory goes and
``BuildCancelledError`` is raised.

Extending: an HNSW graph grows by insertion, so the graph of a segment's rows
plus new ones, built by adding the new rows to a copy of the segment's graph,
is the graph a build of all of them in that order would make. Extending the
largest segment therefore costs the new rows' insertions plus copying the
segment's files, not a rebuild of everything: that is what lets the
optimizer keep one graph for the whole collection as data arrives (see
``collection/optimizer.py``). Rows keep their numbers, so the base's
tombstones carry over row for row.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson

from peregrine.core.fsio import fsync_dir, fsync_tree
from peregrine.vector.ids import KEY_DTYPE, KeyArray
from peregrine.vector.segment.kernels import F32, faiss_metric
from peregrine.vector.segment.payload_index import FieldIndex
from peregrine.vector.segment.rows import payload_part
from peregrine.vector.segment.sealed import (
    BuildCancelledError,
    GraphCodes,
    SealedSegment,
    faiss,
    field_file,
)
from peregrine.vector.segment.side import save_sparse_sides
from peregrine.vector.segment.side_graph import write_side_graphs
from peregrine.vector.types import DenseSpec, IndexConfig, Metric, Quantization

# A float16 copy is used only when every row survives it with at most this
# relative error (float16 rounding alone is <= 2.4e-4 per component).
_FP16_MAX_REL_ERROR = 1e-3
_FP16_MAX_ABS = 6.0e4  # float16's largest finite value is 65504

# The graph is built by adding rows in chunks sized to take about this long, so
# a stop request waits at most that; FAISS still parallelises inside a chunk.
_BUILD_CHUNK_S = 0.25
# An int8 graph is extended only when its ranges were trained on this many rows.
INT8_MIN_TRAINED_ROWS = 20_000

Cancelled = Callable[[], bool]


def build_sealed_segment(
    directory: Path,
    vectors: F32,
    keys: KeyArray,
    blobs: Sequence[bytes],
    metric: Metric,
    config: IndexConfig,
    declared_fields: Sequence[str],
    codes: GraphCodes | None = None,
    cancelled: Cancelled = lambda: False,
    side: Mapping[str, DenseSpec] | None = None,
    sparse: Sequence[str] = (),
) -> None:
    """Write a complete segment directory from rows.

    ``codes`` overrides the choice of ``graph_codes`` (benchmarks compare them).
    ``side``: the named dense vectors that get a graph of their own
    (``side_graph.py``); ``sparse``: the sparse vectors whose sorted lists are
    saved (``side.save_sparse_sides``).
    """
    def write(tmp: Path) -> None:
        _write_segment(tmp, vectors, keys, blobs, metric, config, declared_fields, codes,
                       cancelled)
        write_side_graphs(tmp, side or {}, config, lambda row: blobs[row], len(blobs),
                          lambda index, rows: _add_rows(index, rows, cancelled))
        save_sparse_sides(tmp, sparse, lambda row: blobs[row], len(blobs))

    _in_tmp(directory, write)


def extend_sealed_segment(
    directory: Path,
    base: SealedSegment,
    vectors: F32,
    keys: KeyArray,
    blobs: Sequence[bytes],
    config: IndexConfig,
    declared_fields: Sequence[str],
    cancelled: Cancelled = lambda: False,
    side: Mapping[str, DenseSpec] | None = None,
    sparse: Sequence[str] = (),
) -> bool:
    """Write ``base``'s rows followed by new ones, the graph grown from base's
    (and each ``side`` vector's graph grown from base's, or built whole).

    Returns False (and writes nothing) when base's graph cannot hold the new
    rows as a fresh build would: float16 codes for rows float16 cannot carry,
    or a quantization setting that changed since base was built.
    """
    if base.dim != vectors.shape[1]:
        return False
    if base.codes is GraphCodes.INT8:
        # The int8 quantiser's ranges were trained on base's rows and are kept;
        # a small base would clip everything that follows.
        compatible = (config.quantization is Quantization.INT8
                      and base.n_rows >= INT8_MIN_TRAINED_ROWS)
    else:
        wanted = graph_codes(vectors, config, base.metric) if vectors.shape[0] else base.codes
        compatible = base.codes is wanted or (
            base.codes is GraphCodes.FLOAT32 and wanted is GraphCodes.FLOAT16)
    if not compatible:
        return False
    def write(tmp: Path) -> None:
        _write_extension(tmp, base, vectors, keys, blobs, declared_fields, cancelled)
        n0 = base.n_rows

        def blob_of(row: int) -> bytes:
            return base.payload_bytes(row) if row < n0 else blobs[row - n0]

        write_side_graphs(tmp, side or {}, base.config, blob_of, n0 + len(blobs),
                          lambda index, rows: _add_rows(index, rows, cancelled),
                          base=base.directory, n0=n0)
        save_sparse_sides(tmp, sparse, blob_of, n0 + len(blobs))

    _in_tmp(directory, write)
    return True


def _in_tmp(directory: Path, write: Callable[[Path], None]) -> None:
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, directory)
    fsync_dir(directory.parent)  # the rename itself must survive a power loss


def _write_segment(tmp: Path, vectors: F32, keys: KeyArray, blobs: Sequence[bytes],
                   metric: Metric, config: IndexConfig, declared_fields: Sequence[str],
                   codes: GraphCodes | None, cancelled: Cancelled) -> None:
    n, dim = vectors.shape
    # Rows arrive normalised for cosine already (the WAL logs them that way).
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    np.save(tmp / "vectors.npy", vectors)
    _write_keys(tmp, keys)
    _write_payloads(tmp, np.zeros(1, np.uint64), blobs)
    np.save(tmp / "deleted.npy", np.zeros(n, dtype=np.bool_))
    codes = codes or graph_codes(vectors, config, metric)
    index = _new_index(vectors, metric, config, codes)
    _add_rows(index, vectors, cancelled)
    faiss.write_index(index, str(tmp / "index.faiss"))
    del index
    _write_fields(tmp, declared_fields, n, lambda row: orjson.loads(payload_part(blobs[row])),
                  {})
    _write_meta(tmp, n, dim, metric, config, codes)


def _write_extension(tmp: Path, base: SealedSegment, vectors: F32, keys: KeyArray,
                     blobs: Sequence[bytes], declared_fields: Sequence[str],
                     cancelled: Cancelled) -> None:
    n0, dim = base.n_rows, base.dim
    n = n0 + vectors.shape[0]
    # The graph first: it is the long part, and a cancel then wastes no copying.
    index = faiss.read_index(str(base.directory / "index.faiss"))
    _add_rows(index, np.ascontiguousarray(vectors, dtype=np.float32), cancelled)
    faiss.write_index(index, str(tmp / "index.faiss"))
    del index
    _check(cancelled)
    _append_rows(base.directory / "vectors.npy", tmp / "vectors.npy", n0, vectors)
    _write_keys(tmp, np.concatenate([base.keys_view(), keys]))
    _check(cancelled)
    shutil.copyfile(base.directory / "payload.bin", tmp / "payload.bin")
    _write_payloads(tmp, base.payload_offsets(), blobs)
    np.save(tmp / "deleted.npy", np.zeros(n, dtype=np.bool_))
    _check(cancelled)
    saved = {path: base.directory / "fields" / field_file(path) for path in declared_fields}

    def payload_of(row: int) -> dict[str, Any] | None:
        if row < n0:
            return base.payload(row)
        return orjson.loads(payload_part(blobs[row - n0]))  # type: ignore[no-any-return]

    _write_fields(tmp, declared_fields, n, payload_of, saved)
    _write_meta(tmp, n, dim, base.metric, base.config, base.codes)


def _check(cancelled: Cancelled) -> None:
    if cancelled():
        raise BuildCancelledError


def _append_rows(source: Path, target: Path, n0: int, vectors: F32) -> None:
    """``target`` = the (n0, dim) float32 array in ``source`` followed by ``vectors``.

    The old rows are copied by the kernel (``copy_file_range``/``sendfile``):
    read through a memory map they would all become resident in this process
    for as long as the map lived, hundreds of MB of RSS for a copy.
    """
    dim = vectors.shape[1]
    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    with open(source, "rb") as src, open(target, "wb") as dst:
        version = np.lib.format.read_magic(src)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(src)
        if shape != (n0, dim) or fortran or dtype != np.float32:
            raise ValueError(f"{source} holds {dtype}{list(shape)}, expected float32 rows")
        np.lib.format.write_array_header_1_0(
            dst, {"descr": "<f4", "fortran_order": False, "shape": (n0 + rows.shape[0], dim)})
        dst.flush()
        _copy_range(src, dst, src.tell(), n0 * dim * 4)
        dst.seek(0, os.SEEK_END)
        dst.write(rows.tobytes())


def _copy_range(src: BinaryIO, dst: BinaryIO, offset: int, count: int) -> None:
    """``count`` bytes of ``src`` from ``offset`` appended to ``dst``, in the kernel
    where it can (Linux), through a 1 MiB buffer elsewhere."""
    try:
        while count:
            sent = os.sendfile(dst.fileno(), src.fileno(), offset, count)
            if sent == 0:
                raise ValueError(f"{src.name} is shorter than its header says")
            offset, count = offset + sent, count - sent
        return
    except OSError:
        pass  # no sendfile between regular files here
    dst.seek(0, os.SEEK_END)
    src.seek(offset)
    while count:
        chunk = src.read(min(count, 1 << 20))
        if not chunk:
            raise ValueError(f"{src.name} is shorter than its header says")
        dst.write(chunk)
        count -= len(chunk)


def _write_keys(tmp: Path, keys: KeyArray) -> None:
    keys = np.ascontiguousarray(keys, dtype=KEY_DTYPE)
    np.save(tmp / "keys.npy", keys)
    np.save(tmp / "key_order.npy", np.argsort(keys, kind="stable").astype(np.int64))


def _write_payloads(tmp: Path, offsets: np.ndarray[Any, Any], blobs: Sequence[bytes]) -> None:
    """Append ``blobs`` to ``payload.bin`` (which holds ``offsets[-1]`` bytes) and
    write the offsets of old and new rows."""
    lengths = np.fromiter((len(b) for b in blobs), dtype=np.uint64, count=len(blobs))
    new = np.empty(len(blobs), dtype=np.uint64)
    np.cumsum(lengths, out=new)
    new += np.uint64(offsets[-1])
    with open(tmp / "payload.bin", "ab") as fh:
        fh.write(b"".join(blobs))
    np.save(tmp / "payload_offsets.npy", np.concatenate([offsets.astype(np.uint64), new]))


def _write_fields(tmp: Path, declared_fields: Sequence[str], n: int,
                  payload_of: Callable[[int], dict[str, Any] | None],
                  saved: dict[str, Path]) -> None:
    """Index files of the declared fields; a saved one (of the first rows) is
    loaded and only the rows after it are indexed."""
    if not declared_fields:
        return
    (tmp / "fields").mkdir()
    for path in declared_fields:
        known = saved.get(path)
        field = FieldIndex.load(known) if known is not None and known.exists() else None
        if field is None:
            field = FieldIndex(path)
        field.catch_up(payload_of, n)
        field.save(tmp / "fields" / field_file(path))


def _write_meta(tmp: Path, n: int, dim: int, metric: Metric, config: IndexConfig,
                codes: GraphCodes) -> None:
    meta = {"rows": n, "dim": dim, "metric": metric.value,
            "quantization": config.quantization.value, "codes": codes.value, "format": 1}
    (tmp / "meta.json").write_bytes(orjson.dumps(meta))


def graph_codes(vectors: F32, config: IndexConfig, metric: Metric = Metric.DOT) -> GraphCodes:
    """int8 when asked for; float16 when every row survives it; else float32.
    Manhattan always float32: FAISS's scalar quantizer has no L1 distance."""
    if metric is Metric.L1:
        return GraphCodes.FLOAT32
    if config.quantization is Quantization.INT8:
        return GraphCodes.INT8
    if vectors.shape[0] == 0:
        return GraphCodes.FLOAT32
    for start in range(0, vectors.shape[0], 16_384):  # bounds the temporaries (~25 MB)
        block = vectors[start : start + 16_384]
        if float(np.abs(block).max()) > _FP16_MAX_ABS:
            return GraphCodes.FLOAT32
        error = block - block.astype(np.float16).astype(np.float32)
        err = np.einsum("ij,ij->i", error, error)
        norm = np.einsum("ij,ij->i", block, block)
        if (err > _FP16_MAX_REL_ERROR**2 * norm).any():
            return GraphCodes.FLOAT32
    return GraphCodes.FLOAT16


def _new_index(vectors: F32, metric: Metric, config: IndexConfig, codes: GraphCodes) -> Any:
    dim = vectors.shape[1]
    index: Any
    if codes is GraphCodes.FLOAT32:
        index = faiss.IndexHNSWFlat(dim, config.m, faiss_metric(metric))
    else:
        qtype = (faiss.ScalarQuantizer.QT_8bit if codes is GraphCodes.INT8
                 else faiss.ScalarQuantizer.QT_fp16)
        index = faiss.IndexHNSWSQ(dim, qtype, config.m, faiss_metric(metric))
        if vectors.shape[0]:
            index.train(vectors)
    index.hnsw.efConstruction = config.ef_construction
    index.hnsw.efSearch = config.ef
    return index


def _add_rows(index: Any, vectors: F32, cancelled: Cancelled) -> None:
    start, chunk, n = 0, 1024, vectors.shape[0]
    while start < n:
        if cancelled():
            raise BuildCancelledError
        began = time.perf_counter()
        index.add(vectors[start : start + chunk])
        start += chunk
        took = max(time.perf_counter() - began, 1e-6)
        chunk = int(min(65_536, max(256, chunk * min(4.0, _BUILD_CHUNK_S / took))))
