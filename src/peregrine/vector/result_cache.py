"""A bounded LRU of encoded read results, made stale by any write.

Real-time clients repeat queries (a dashboard polling the same filter, a
retriever asked the same question twice). Each entry remembers the write
version of its collection at the moment the read *started*; a write bumps the
version after it is applied, so an entry computed before or during a write is
never served after it. Staleness is checked on lookup, so invalidation costs a
counter increment, not a scan.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    entries: int
    bytes: int

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class ResultCache:
    """Maps (collection, request key) to encoded bytes, bounded by count and size."""

    def __init__(self, max_entries: int = 10_000, max_bytes: int = 64 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._data: OrderedDict[tuple[str, bytes], tuple[int, bytes]] = OrderedDict()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0

    def get(self, collection: str, key: bytes, version: int) -> bytes | None:
        with self._lock:
            entry = self._data.get((collection, key))
            if entry is None or entry[0] != version:
                self._misses += 1
                return None
            self._data.move_to_end((collection, key))
            self._hits += 1
            return entry[1]

    def put(self, collection: str, key: bytes, version: int, value: bytes) -> None:
        size = len(key) + len(value)
        if size > self.max_bytes // 16:  # one huge answer must not flush the cache
            return
        with self._lock:
            old = self._data.pop((collection, key), None)
            if old is not None:
                self._bytes -= len(key) + len(old[1])
            self._data[(collection, key)] = (version, value)
            self._bytes += size
            while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
                (_, old_key), (_, old_value) = self._data.popitem(last=False)
                self._bytes -= len(old_key) + len(old_value)

    def drop_collection(self, collection: str) -> None:
        with self._lock:
            for k in [k for k in self._data if k[0] == collection]:
                _, value = self._data.pop(k)
                self._bytes -= len(k[1]) + len(value)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._data), self._bytes)
