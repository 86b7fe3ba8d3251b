"""A row's stored bytes: its payload, and the vectors that are not the primary one.

A collection's primary dense vector lives in the segment's float32 matrix (the
one HNSW indexes). Its other vectors (named dense vectors searched exactly,
and sparse vectors) travel inside the row's blob, next to the payload, so
that every path that already carries a row unchanged (the WAL, sealing,
merging, snapshots, the crash test) carries them too. A blob is either:

- a plain JSON payload (``{...}`` or ``null``): a row with no other vectors,
  the only form written before named and sparse vectors existed; or
- ``0x01``, the payload's length (u32), the payload JSON, then the vectors:
  a count (u16), and per vector its name (u8 length + UTF-8), its kind (u8:
  0 dense, 1 sparse, 2 multivector), its length (u32), and its little-endian
  data (dense: float32 values; sparse: uint32 indices, then float32 values;
  multivector: its row width (u32), then float32 values row by row);
- ``0x02`` and the same layout: a row that lacks its primary vector (a point
  of a named-vector collection that has only other vectors). Its row in the
  segment's matrix is zeros, and searches of the primary vector pass it by.

Binary rather than JSON: a sparse vector of 200 entries is 1.6 KB here and
parses with two ``np.frombuffer`` calls.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import numpy as np

from peregrine.core.errors import StorageError
from peregrine.vector.types import SparseVector

EXTENDED = 0x01
LACKING = 0x02  # EXTENDED, and the row has no primary vector
_HEAD = struct.Struct("<BI")
_COUNT = struct.Struct("<H")
_ENTRY = struct.Struct("<BI")
_DENSE, _SPARSE, _MULTI = 0, 1, 2
_DIM = struct.Struct("<I")

# What a side vector is in memory: a float32 row, or a sparse vector.
SideVector = np.ndarray | SparseVector


def pack_row(payload: bytes, vectors: Mapping[str, SideVector] | None,
             lacks_primary: bool = False) -> bytes:
    """The blob of a row: ``payload`` (JSON bytes) alone when there are no side
    vectors and it has its primary vector, else the extended form."""
    if not vectors and not lacks_primary:
        return payload
    vectors = vectors or {}
    lead = LACKING if lacks_primary else EXTENDED
    parts = [_HEAD.pack(lead, len(payload)), payload, _COUNT.pack(len(vectors))]
    for name, value in vectors.items():
        raw = name.encode()
        parts.append(bytes((len(raw),)) + raw)
        if isinstance(value, SparseVector):
            parts.append(_ENTRY.pack(_SPARSE, value.indices.size))
            parts.append(np.ascontiguousarray(value.indices, dtype="<u4").tobytes())
            parts.append(np.ascontiguousarray(value.values, dtype="<f4").tobytes())
        elif value.ndim == 2:  # a multivector: its rows' width, then the values
            parts.append(_ENTRY.pack(_MULTI, value.size) + _DIM.pack(value.shape[1]))
            parts.append(np.ascontiguousarray(value, dtype="<f4").tobytes())
        else:
            parts.append(_ENTRY.pack(_DENSE, value.size))
            parts.append(np.ascontiguousarray(value, dtype="<f4").tobytes())
    return b"".join(parts)


def lacks_primary(blob: bytes | memoryview) -> bool:
    """Whether the row has no primary vector."""
    return bool(blob) and blob[0] == LACKING


def payload_part(blob: bytes | memoryview) -> bytes | memoryview:
    """The payload JSON of a blob (the whole blob when it has no side vectors)."""
    if not blob or blob[0] not in (EXTENDED, LACKING):
        return blob
    _, length = _HEAD.unpack_from(blob, 0)
    return blob[_HEAD.size:_HEAD.size + length]


def with_payload(blob: bytes, payload: bytes) -> bytes:
    """``blob`` with its payload replaced, its side vectors (and a missing primary
    vector) kept."""
    if not blob or blob[0] not in (EXTENDED, LACKING):
        return payload
    lead, length = _HEAD.unpack_from(blob, 0)
    rest = blob[_HEAD.size + length:]
    return _HEAD.pack(lead, len(payload)) + payload + rest


def side_vectors(blob: bytes | memoryview) -> dict[str, SideVector]:
    """The side vectors of a blob, by name (views into ``blob``, not copies)."""
    if not blob or blob[0] not in (EXTENDED, LACKING):
        return {}
    try:
        _, length = _HEAD.unpack_from(blob, 0)
        pos = _HEAD.size + length
        (count,) = _COUNT.unpack_from(blob, pos)
        pos += _COUNT.size
        out: dict[str, SideVector] = {}
        for _ in range(count):
            size = blob[pos]
            name = bytes(blob[pos + 1:pos + 1 + size]).decode()
            pos += 1 + size
            kind, n = _ENTRY.unpack_from(blob, pos)
            pos += _ENTRY.size
            if kind == _DENSE:
                out[name] = np.frombuffer(blob, "<f4", n, pos)
                pos += 4 * n
            elif kind == _MULTI:
                (dim,) = _DIM.unpack_from(blob, pos)
                pos += _DIM.size
                if dim < 1 or n % dim:
                    raise ValueError("a multivector's values do not fill its rows")
                out[name] = np.frombuffer(blob, "<f4", n, pos).reshape(-1, dim)
                pos += 4 * n
            elif kind == _SPARSE:
                indices = np.frombuffer(blob, "<u4", n, pos)
                values = np.frombuffer(blob, "<f4", n, pos + 4 * n)
                out[name] = SparseVector(indices, values)
                pos += 8 * n
            else:
                raise ValueError(f"unknown vector kind {kind}")
        if pos != len(blob):
            raise ValueError("trailing bytes")
    except (struct.error, ValueError, IndexError, UnicodeDecodeError) as exc:
        raise StorageError(f"malformed row record: {exc}") from None
    return out
