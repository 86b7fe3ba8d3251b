"""What the Qdrant route modules share: names from the path, cached reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from peregrine.edge.http.protocol import Call, Encoded, encode
from peregrine.vector.service import VectorService


def collection_name(call: Call) -> str:
    return call.path["collection_name"]


async def cached_read(call: Call, vector: VectorService, compute: Callable[[], Any],
                      cache: bool = True) -> Encoded:
    """The encoded result of a read, from the result cache when nothing was written since.

    The answer is cached already encoded in the response format, so a hit
    costs a lookup and no serialisation. ``cache=False`` for a read that also
    depends on another collection (whose writes would not invalidate it).
    """
    name = collection_name(call)
    fmt = call.fmt
    key = call.cache_key() if vector.caches_reads and cache else b""  # copies the body

    def work() -> tuple[bytes, bool]:
        if not cache:
            return encode(compute(), fmt), False
        return vector.cached(name, key, lambda: encode(compute(), fmt))

    data, hit = await call.run(work)
    call.timing["cache_hit"] = 1.0 if hit else 0.0
    return Encoded(data)
