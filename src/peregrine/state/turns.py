"""A conversation turn, and its compact encoding for Redis."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn of a session. Turns are ordered by (``ts``, ``turn_id``) on every node
    and tier, so turns appended on different nodes merge in one order."""

    turn_id: str
    role: str
    content: str
    ts: float  # seconds since the epoch, when it was appended

    def as_dict(self) -> dict[str, Any]:
        return {"turn_id": self.turn_id, "role": self.role, "content": self.content,
                "ts": self.ts}

    def pack(self) -> bytes:
        return bytes(msgpack.packb((self.turn_id, self.role, self.content, self.ts)))

    @staticmethod
    def unpack(data: bytes) -> Turn:
        turn_id, role, content, ts = msgpack.unpackb(data)
        return Turn(turn_id, role, content, float(ts))
