"""Point ids: unsigned 64-bit integers or UUIDs, as in Qdrant.

Internally every id becomes a fixed 17-byte key: one tag byte (0 = integer,
1 = UUID) followed by the big-endian integer (padded) or the 16 UUID bytes.
Fixed-width byte keys let numpy sort, search and intersect ids of both kinds
in one vectorised array per segment, and big-endian order makes byte order
equal numeric order, so scrolling by id needs no decoding. The tag keeps
integer 5 and UUID 00000000-0000-0000-0000-000000000005 distinct, as Qdrant
does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from peregrine.vector.errors import DuplicateIdError, InvalidPointIdError

KEY_WIDTH = 17
KEY_DTYPE = np.dtype(f"S{KEY_WIDTH}")
_TAG_INT = 0
_TAG_UUID = 1
_U64_MAX = (1 << 64) - 1

PointId = int | str
KeyArray = npt.NDArray[np.bytes_]


def _uuid_bytes(value: str) -> bytes:
    try:
        return uuid.UUID(value).bytes
    except (ValueError, AttributeError, TypeError):
        raise InvalidPointIdError(
            f"point id {value!r} is not a valid UUID or unsigned 64-bit integer"
        ) from None


def encode_ids(ids: Sequence[Any] | npt.NDArray[Any] | Iterable[Any]) -> KeyArray:
    """Turn user ids into keys; raises InvalidPointIdError on any bad id."""
    if isinstance(ids, (str, bytes, int, float, uuid.UUID, np.generic)) or ids is None:
        raise InvalidPointIdError("ids must be a list (or 1-D array) of point ids")
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1:
            raise InvalidPointIdError("ids must be a one-dimensional sequence")
        if ids.dtype.kind in "iu":
            if ids.dtype.kind == "i" and ids.size and int(ids.min()) < 0:
                raise InvalidPointIdError("point ids must be unsigned (>= 0)")
            return _encode_u64(ids.astype(np.uint64, copy=False))
        ids = ids.tolist()
    items = list(ids)
    if items and all(type(i) is int for i in items):
        lo, hi = min(items), max(items)
        if lo < 0 or hi > _U64_MAX:
            bad = lo if lo < 0 else hi
            raise InvalidPointIdError(f"point id {bad} is outside the unsigned 64-bit range")
        return _encode_u64(np.asarray(items, dtype=np.uint64))
    buf = bytearray(KEY_WIDTH * len(items))
    for n, item in enumerate(items):
        off = n * KEY_WIDTH
        if isinstance(item, bool):
            raise InvalidPointIdError(f"point id {item!r} is a boolean, not an id")
        if isinstance(item, (int, np.integer)):
            value = int(item)
            if value < 0 or value > _U64_MAX:
                raise InvalidPointIdError(f"point id {value} is outside the unsigned 64-bit range")
            buf[off] = _TAG_INT
            buf[off + 1 : off + 9] = value.to_bytes(8, "big")
        elif isinstance(item, uuid.UUID):
            buf[off] = _TAG_UUID
            buf[off + 1 : off + 17] = item.bytes
        elif isinstance(item, str):
            buf[off] = _TAG_UUID
            buf[off + 1 : off + 17] = _uuid_bytes(item)
        else:
            raise InvalidPointIdError(
                f"point id {item!r} must be an unsigned integer or a UUID string"
            )
    return np.frombuffer(bytes(buf), dtype=KEY_DTYPE)


def encode_id(point_id: Any) -> bytes:
    """Key of a single id (as 17 raw bytes)."""
    return bytes(encode_ids([point_id])[0]).ljust(KEY_WIDTH, b"\0")


def _encode_u64(values: npt.NDArray[np.uint64]) -> KeyArray:
    raw = np.zeros((values.shape[0], KEY_WIDTH), dtype=np.uint8)
    raw[:, 1:9] = values.astype(">u8").view(np.uint8).reshape(-1, 8)
    return raw.reshape(-1).view(KEY_DTYPE)


def decode_key(key: bytes) -> PointId:
    """Key back to the user's id (int or canonical UUID string)."""
    key = bytes(key).ljust(KEY_WIDTH, b"\0")
    if key[0] == _TAG_INT:
        return int.from_bytes(key[1:9], "big")
    return str(uuid.UUID(bytes=key[1:17]))


def decode_keys(keys: KeyArray) -> list[PointId]:
    """Vectorised decode for the common all-integer case."""
    if keys.size == 0:
        return []
    raw = np.ascontiguousarray(keys).view(np.uint8).reshape(-1, KEY_WIDTH)
    if not raw[:, 0].any():
        return cast(list[PointId], raw[:, 1:9].copy().view(">u8").reshape(-1).tolist())
    return [decode_key(bytes(row)) for row in raw]


def check_unique(keys: KeyArray) -> None:
    """Reject batches that name the same point twice (ambiguous last-write)."""
    if keys.size < 2:
        return
    ordered = np.sort(keys)
    dup = np.flatnonzero(ordered[1:] == ordered[:-1])
    if dup.size:
        raise DuplicateIdError(
            f"point id {decode_key(ordered[dup[0]])!r} appears more than once in the batch"
        )
