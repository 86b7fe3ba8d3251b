"""Caches of the state face: bytes by key, in memory then Redis, with TTLs.

Used for the embedding cache (key: ``embedding_key``, the embedder's own
SHA-256 text key; value: the float32 vector's bytes) and result caches. Memory is an LRU
bounded in entries and bytes; Redis (when configured and up) shares entries
between nodes and processes. A Redis that is down only costs misses.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from typing import Any

import redis

from peregrine.embed.cache import text_key
from peregrine.state.shared import RedisTier


def embedding_key(model_id: str, text: str) -> str:
    """The key of a text's vector: the embedder's own cache key, in hex."""
    return text_key(model_id, text).hex()


class TieredCache:
    def __init__(self, name: str, max_entries: int, max_bytes: int, ttl_s: float,
                 redis_tier: RedisTier | None, counter: Any = None) -> None:
        self.name, self.ttl_s = name, ttl_s
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.redis = redis_tier
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = {"memory": 0, "redis": 0}
        self.misses = 0
        # Prometheus children (peregrine_state_cache{cache,result}), looked up once.
        self._counted = ({r: counter.labels(name, r) for r in ("memory", "redis", "miss")}
                         if counter is not None else None)

    def _note(self, result: str) -> None:
        if result == "miss":
            self.misses += 1
        else:
            self.hits[result] += 1
        if self._counted is not None:
            self._counted[result].inc()

    def _rkey(self, key: str) -> str:
        return f"pg:c:{self.name}:{key}"

    def get(self, key: str) -> bytes | None:
        now = time.monotonic()
        with self._lock:
            found = self._items.get(key)
            if found is not None and found[0] >= now:
                self._items.move_to_end(key)
                value = found[1]
            else:
                value = None
        if value is not None:
            self._note("memory")
            return value
        if self.redis is not None and self.redis.up:
            try:
                shared = self.redis.client.get(self._rkey(key))
            except redis.RedisError:
                shared = None
            if isinstance(shared, bytes):
                self._remember(key, shared)
                self._note("redis")
                return shared
        self._note("miss")
        return None

    def put(self, key: str, value: bytes) -> None:
        self._remember(key, value)
        if self.redis is not None and self.redis.up:
            with contextlib.suppress(redis.RedisError):  # a cache: memory still has it
                self.redis.client.set(self._rkey(key), value, px=int(self.ttl_s * 1000))

    def _remember(self, key: str, value: bytes) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old[1])
            self._items[key] = (time.monotonic() + self.ttl_s, value)
            self._bytes += len(value)
            while self._items and (len(self._items) > self.max_entries
                                   or self._bytes > self.max_bytes):
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= len(dropped)
