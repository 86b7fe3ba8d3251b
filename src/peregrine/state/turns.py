"""A conversation turn, and its compact encoding for Redis."""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import msgpack


class Turn(NamedTuple):
    """One turn of a session. Turns are ordered by (``ts``, ``turn_id``) on every node
    and tier, so turns appended on different nodes merge in one order. A named tuple:
    reads build many of them, and a tuple is the cheapest object to build."""

    turn_id: str
    role: str
    content: str
    ts: float  # seconds since the epoch, when it was appended

    def as_dict(self) -> dict[str, Any]:
        return {"turn_id": self.turn_id, "role": self.role, "content": self.content,
                "ts": self.ts}

    def pack(self) -> bytes:
        return bytes(msgpack.packb(tuple(self)))

    @staticmethod
    def unpack(data: bytes) -> Turn:
        return Turn(*msgpack.unpackb(data))

    @staticmethod
    def unpack_many(packed: list[bytes]) -> list[Turn]:
        """Many packed turns in one msgpack call (one array header, then them all)."""
        n = len(packed)
        header = bytes([0x90 | n]) if n < 16 else b"\xdc" + n.to_bytes(2, "big")
        return list(map(_make_turn, msgpack.unpackb(header + b"".join(packed), use_list=False)))


#: ``Turn`` from a 4-tuple without ``_make``'s checks (a read decodes many at once).
_make_turn = partial(tuple.__new__, Turn)
