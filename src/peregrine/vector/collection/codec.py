"""Validation of user input and the byte encoding of WAL records.

Everything a write needs is checked here, before the WAL sees it, so a
rejected call leaves no trace; and the same bytes that go to the WAL are what
replay decodes, so a recovered batch is identical to the acknowledged one.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from peregrine.core.errors import InvalidInputError, StorageError
from peregrine.vector.errors import DimensionMismatchError, InvalidPayloadError, InvalidVectorError
from peregrine.vector.ids import KEY_DTYPE, KEY_WIDTH, KeyArray, check_unique, encode_ids
from peregrine.vector.segment.kernels import F32, normalize_rows
from peregrine.vector.segment.rows import SideVector, pack_row, payload_part, side_vectors
from peregrine.vector.types import CollectionConfig, Metric, SparseVector

_UPSERT_HEAD = struct.Struct("<II")
_COUNT = struct.Struct("<I")
NULL_BLOB = b"null"
MAX_SPARSE_ENTRIES = 65_536  # non-zero entries of one sparse vector
MAX_MULTIVECTOR_ROWS = 1024  # vectors of one multivector (ColBERT: one per token)
_U32 = 1 << 32

# The side vectors of each point of a write (named dense, sparse), by name.
SideRows = list[dict[str, SideVector]]


@dataclass(frozen=True, slots=True)
class UpsertBatch:
    keys: KeyArray
    vectors: F32
    blobs: list[bytes]  # one JSON document per point; b"null" for no payload

    def subset(self, keep: npt.NDArray[np.bool_]) -> UpsertBatch:
        if keep.all():
            return self
        return UpsertBatch(self.keys[keep], self.vectors[keep],
                           [b for b, k in zip(self.blobs, keep.tolist(), strict=True) if k])

    def encode(self) -> bytes:
        n, dim = self.vectors.shape
        lengths = np.fromiter((len(b) for b in self.blobs), dtype="<u4", count=n)
        return b"".join((
            _UPSERT_HEAD.pack(n, dim),
            np.ascontiguousarray(self.keys).tobytes(),
            np.ascontiguousarray(self.vectors, dtype="<f4").tobytes(),
            lengths.tobytes(),
            *self.blobs,
        ))

    @classmethod
    def decode(cls, body: bytes, dim: int | None = None) -> UpsertBatch:
        """The batch ``encode`` wrote; a record of another shape is a StorageError.

        WAL records are checked by CRC, so a failure here means a record that
        was written by something else (or for another collection): ``dim``,
        when given, must match too.
        """
        try:
            n, got_dim = _UPSERT_HEAD.unpack_from(body, 0)
            if dim is not None and got_dim != dim:
                raise ValueError(f"{got_dim}-d vectors in a {dim}-d collection")
            pos = _UPSERT_HEAD.size
            keys = np.frombuffer(body, dtype=KEY_DTYPE, count=n, offset=pos)
            pos += n * KEY_WIDTH
            vectors = np.frombuffer(body, dtype="<f4", count=n * got_dim,
                                    offset=pos).reshape(n, got_dim)
            pos += n * got_dim * 4
            lengths = np.frombuffer(body, dtype="<u4", count=n, offset=pos)
            pos += n * 4
            if pos + int(lengths.sum(dtype=np.uint64)) != len(body):
                raise ValueError("payload lengths do not add up to the record size")
        except (struct.error, ValueError) as exc:
            raise StorageError(f"malformed upsert record: {exc}") from None
        blobs: list[bytes] = []
        for length in lengths.tolist():
            blobs.append(body[pos : pos + length])
            pos += length
        return cls(keys, np.asarray(vectors, dtype=np.float32), blobs)


def check_blobs(blobs: Sequence[bytes]) -> None:
    """Each row record is a JSON object or null and well-formed side vectors (for
    records from outside)."""
    for blob in blobs:
        try:
            side_vectors(blob)
            value = orjson.loads(payload_part(blob))
        except (orjson.JSONDecodeError, StorageError):
            value = ""
        if value is not None and not isinstance(value, dict):
            raise StorageError("malformed upsert record: a payload is not a JSON object")


_SUB = struct.Struct("<BI")


def encode_batch(records: Sequence[tuple[int, bytes]]) -> bytes:
    """Several (op, body) records as the body of one: a batch is durable whole or
    not at all, as one WAL record is."""
    return b"".join([_COUNT.pack(len(records)),
                     *(_SUB.pack(op, len(body)) + body for op, body in records)])


def decode_batch(body: bytes) -> list[tuple[int, bytes]]:
    try:
        (count,) = _COUNT.unpack_from(body, 0)
        pos, out = _COUNT.size, []
        for _ in range(count):
            op, length = _SUB.unpack_from(body, pos)
            pos += _SUB.size
            if pos + length > len(body):
                raise ValueError("a record runs past the batch")
            out.append((op, body[pos:pos + length]))
            pos += length
        if pos != len(body):
            raise ValueError("trailing bytes")
    except (struct.error, ValueError) as exc:
        raise StorageError(f"malformed batch record: {exc}") from None
    return out


def encode_delete(keys: KeyArray) -> bytes:
    return _COUNT.pack(keys.shape[0]) + np.ascontiguousarray(keys).tobytes()


def decode_delete(body: bytes) -> KeyArray:
    try:
        (n,) = _COUNT.unpack_from(body, 0)
        if _COUNT.size + n * KEY_WIDTH != len(body):
            raise ValueError("key count does not match the record size")
        return np.frombuffer(body, dtype=KEY_DTYPE, count=n, offset=_COUNT.size)
    except (struct.error, ValueError) as exc:
        raise StorageError(f"malformed delete record: {exc}") from None


def as_vectors(vectors: Any, dim: int, metric: Metric, what: str = "vectors") -> F32:
    """(n, dim) float32, finite, normalised for cosine; else a typed error."""
    if isinstance(vectors, np.ndarray) and vectors.dtype == np.float32 and vectors.ndim == 1 \
            and vectors.shape[0] == dim:
        # Fast path for the single-query hot loop: few numpy calls, as each costs
        # microseconds when a graph walk has just flushed the CPU caches. The
        # float64 sum of squares is finite exactly when every float32 value is.
        wide = vectors.astype(np.float64)
        square = float(np.dot(wide, wide))
        if not math.isfinite(square):
            raise InvalidVectorError(f"{what} contain NaN or infinite values")
        if metric is Metric.COSINE and square > 0:
            wide /= math.sqrt(square)
            return wide.astype(np.float32).reshape(1, dim)
        return vectors.reshape(1, dim)
    try:
        arr = np.asarray(vectors)
    except ValueError:
        # numpy refuses ragged nesting: some vector has another length.
        raise DimensionMismatchError(f"{what}: every vector must have dimension {dim}") from None
    except TypeError:
        raise InvalidVectorError(f"{what} must be a rectangular array of numbers") from None
    if arr.dtype == object or arr.dtype.kind not in "fiu":
        raise InvalidVectorError(f"{what} must contain only numbers (got {arr.dtype})")
    if arr.ndim == 1:
        arr = arr.reshape(1, -1) if arr.size else arr.reshape(0, dim)
    if arr.ndim != 2:
        raise InvalidVectorError(f"{what} must be a 2-D array of shape (n, {dim})")
    if arr.shape[1] != dim:
        raise DimensionMismatchError(
            f"{what}: expected dimension {dim}, got {arr.shape[1]}"
        )
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        raise InvalidVectorError(f"{what} contain NaN or infinite values (or overflow float32)")
    if metric is Metric.COSINE:
        out = normalize_rows(out)
    return out


def as_sparse(value: Any, what: str = "sparse vector") -> SparseVector:
    """A sparse vector from ``SparseVector`` or ``{"indices": [...], "values": [...]}``:
    indices unique integers in [0, 2^32), values finite, at most
    ``MAX_SPARSE_ENTRIES``; returned sorted by index."""
    if isinstance(value, SparseVector):
        indices, values = value.indices, value.values
        if (isinstance(indices, np.ndarray) and isinstance(values, np.ndarray)
                and indices.dtype == np.uint32 and values.dtype == np.float32
                and indices.ndim == values.ndim == 1 and indices.size == values.size
                and indices.size <= MAX_SPARSE_ENTRIES and bool(np.isfinite(values).all())
                and bool((indices[1:] > indices[:-1]).all())):
            return value  # already in the stored form (an encoder's output)
    elif isinstance(value, dict) and set(value) == {"indices", "values"}:
        indices, values = value["indices"], value["values"]
    else:
        raise InvalidVectorError(f'{what}: expected {{"indices": [...], "values": [...]}}')
    try:
        idx = np.asarray(indices)
        val = np.asarray(values)
    except (TypeError, ValueError):
        raise InvalidVectorError(f"{what}: indices and values must be flat arrays") from None
    if idx.ndim != 1 or val.ndim != 1 or idx.size != val.size:
        raise InvalidVectorError(f"{what}: indices and values must be flat arrays of one length")
    if idx.size > MAX_SPARSE_ENTRIES:
        raise InvalidVectorError(f"{what}: at most {MAX_SPARSE_ENTRIES} entries")
    if idx.size and (idx.dtype.kind not in "iu" or int(idx.min()) < 0 or int(idx.max()) >= _U32):
        raise InvalidVectorError(f"{what}: indices must be integers in [0, 2^32)")
    if val.size and val.dtype.kind not in "iuf":
        raise InvalidVectorError(f"{what}: values must be numbers")
    with np.errstate(over="ignore"):
        val32 = val.astype(np.float32)
    if not np.isfinite(val32).all():
        raise InvalidVectorError(f"{what}: values contain NaN or infinite values")
    idx32 = idx.astype(np.uint32)
    order = np.argsort(idx32, kind="stable")
    idx32, val32 = idx32[order], val32[order]
    if idx32.size > 1 and (idx32[1:] == idx32[:-1]).any():
        raise InvalidVectorError(f"{what}: indices must be unique")
    return SparseVector(idx32, val32)


def check_datatype(vector: F32, datatype: str, where: str) -> None:
    """A value the declared datatype holds: uint8 takes whole numbers 0-255,
    float16 numbers within its range."""
    if datatype == "uint8" and not (np.all(vector == np.round(vector)) and vector.min() >= 0
                                    and vector.max() <= 255):
        raise InvalidVectorError(f"{where}: a uint8 vector holds whole numbers from 0 to 255")
    if datatype == "float16" and float(np.abs(vector).max(initial=0.0)) > 65504.0:
        raise InvalidVectorError(f"{where}: a float16 vector holds values within +-65504")


def as_side_rows(config: CollectionConfig, side: Sequence[Any] | None, n: int) -> SideRows | None:
    """Each point's named dense and sparse vectors, checked against the collection's
    (a dense one is normalised for cosine, as the primary is)."""
    if side is None:
        return None
    if isinstance(side, dict) or not isinstance(side, Sequence) or len(side) != n:
        raise InvalidInputError(f"named vectors must be a list of {n} objects (or None)")
    out: SideRows = []
    for i, vectors in enumerate(side):
        row: dict[str, SideVector] = {}
        if vectors is not None and not isinstance(vectors, dict):
            raise InvalidInputError(f"point #{i}: named vectors must be an object")
        for name, value in (vectors or {}).items():
            kind = config.vector_kind(name)
            where = f"point #{i}: vector {name!r}"
            if kind == "primary":
                raise InvalidInputError(f"{where} is the primary vector; pass it as vectors")
            if kind == "sparse":
                row[name] = as_sparse(value, where)
            else:
                spec = config.named[name]
                if spec.multi:
                    matrix = as_vectors(value, spec.dim, spec.metric, where)
                    if not 1 <= matrix.shape[0] <= MAX_MULTIVECTOR_ROWS:
                        raise InvalidVectorError(f"{where}: a multivector has 1 to "
                                                 f"{MAX_MULTIVECTOR_ROWS} vectors")
                    row[name] = matrix
                else:
                    vector = as_vectors(value, spec.dim, spec.metric, where)[0]
                    check_datatype(vector, spec.datatype, where)
                    row[name] = vector
        out.append(row)
    return out


def prepare_upsert(
    ids: Any, vectors: Any, payloads: Sequence[Any] | None, dim: int, metric: Metric,
    side: SideRows | None = None, lacking: Sequence[bool] | None = None,
) -> UpsertBatch:
    """``lacking``: which points have no primary vector (their row in ``vectors``
    is a placeholder the record marks as absent)."""
    keys = encode_ids(ids)
    check_unique(keys)
    vecs = as_vectors(vectors, dim, metric)
    if vecs.shape[0] != keys.shape[0]:
        raise InvalidInputError(
            f"got {keys.shape[0]} ids but {vecs.shape[0]} vectors; they must match"
        )
    n = keys.shape[0]
    if side is not None and len(side) != n:
        raise InvalidInputError(f"got {n} ids but {len(side)} sets of named vectors")
    if payloads is None:
        blobs = [NULL_BLOB] * n
    elif isinstance(payloads, dict) or not isinstance(payloads, Sequence) or len(payloads) != n:
        raise InvalidPayloadError(f"payloads must be a list of {n} JSON objects (or None)")
    else:
        blobs = [encode_payload(p, i) for i, p in enumerate(payloads)]
    if side is not None or lacking is not None:
        rows = side if side is not None else [{}] * n
        absent = lacking if lacking is not None else [False] * n
        blobs = [pack_row(b, s, a) for b, s, a in zip(blobs, rows, absent, strict=True)]
    return UpsertBatch(keys, vecs, blobs)


def payload_versions(payloads: Sequence[Any] | None, key: str) -> npt.NDArray[np.int64]:
    """The integer under ``key`` of every payload (a versioned upsert needs each)."""
    if payloads is None or isinstance(payloads, dict) or not isinstance(payloads, Sequence):
        raise InvalidPayloadError(f"a versioned upsert needs a payload with {key!r} per point")
    out = np.empty(len(payloads), dtype=np.int64)
    for i, payload in enumerate(payloads):
        value = payload.get(key) if isinstance(payload, dict) else None
        if not isinstance(value, int) or isinstance(value, bool) or not (
                -(1 << 63) <= value < (1 << 63)):
            raise InvalidPayloadError(f"payload #{i} needs an integer {key!r} (its version)")
        out[i] = value
    return out


def encode_payload(payload: Any, position: int = 0) -> bytes:
    if payload is None:
        return NULL_BLOB
    if not isinstance(payload, dict):
        raise InvalidPayloadError(f"payload #{position} must be a JSON object, not "
                                  f"{type(payload).__name__}")
    try:
        blob = orjson.dumps(payload)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InvalidPayloadError(f"payload #{position} is not JSON-serialisable: {exc}") from None
    if b"null" in blob and _has_non_finite(payload):
        # orjson writes NaN/inf as null; storing a different value than given is data loss.
        raise InvalidPayloadError(f"payload #{position} contains NaN or infinity (not JSON)")
    # orjson (3.12+) returns bytes whose allocation is at least ~4 KB and is
    # never shrunk; the blob lives in the mutable segment until it is sealed,
    # so a 10-byte payload held 4 KB (0.8 GB for 200k points). Copy it to size.
    return bytes(memoryview(blob)) if len(blob) < 2048 else blob


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(v) for v in value)
    return False
