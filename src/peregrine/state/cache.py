"""Caches of the state face: bytes by key, in memory then Redis, with TTLs.

Two are built in: the embedding cache (key: ``embedding_key``, the embedder's own
SHA-256 key of model id and normalized text; value: the float32 vector's bytes)
and the result cache (any bytes an application wants to keep for a while, by a
key of its own, e.g. a tool call's or a retrieval's answer). Memory is an LRU
bounded in entries and bytes; Redis (when configured and up) shares entries
between nodes and processes, and a write or delete tells the other nodes to drop
their memory copy. A Redis that is down only costs misses.
"""

from __future__ import annotations

import struct
import threading
import time
from collections import OrderedDict
from typing import Any

import redis

from peregrine.core.errors import InvalidInputError
from peregrine.embed.cache import text_key
from peregrine.state.shared import INVALIDATIONS, RedisTier

MAX_KEY = 512  # characters of a cache key
_EXPIRY = struct.Struct("<d")  # a Redis value starts with its expiry (epoch seconds)


def embedding_key(model_id: str, text: str) -> str:
    """The key of a text's vector: the embedder's own cache key, in hex."""
    return text_key(model_id, text).hex()


class TieredCache:
    def __init__(self, name: str, max_entries: int, max_bytes: int, ttl_s: float,
                 redis_tier: RedisTier | None, counter: Any = None,
                 max_value_bytes: int | None = None) -> None:
        self.name, self.ttl_s = name, ttl_s
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.max_value_bytes = max_value_bytes or max(1, max_bytes // 16)
        self.redis = redis_tier
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = {"memory": 0, "redis": 0}
        self.misses = 0
        # Prometheus children (peregrine_state_cache{cache,result}), looked up once.
        self._counted = ({r: counter.labels(name, r) for r in ("memory", "redis", "miss")}
                         if counter is not None else None)
        self._prefix = f"c:{name}:"
        self._generation = 0
        if redis_tier is not None:
            redis_tier.listen(self._invalidate)

    def _note(self, result: str) -> None:
        if result == "miss":
            self.misses += 1
        else:
            self.hits[result] += 1
        if self._counted is not None:
            self._counted[result].inc()

    def _rkey(self, key: str) -> str:
        return f"pg:{self._prefix}{key}"

    def _check(self, key: str) -> None:
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY:
            raise InvalidInputError(f"a cache key is a string of 1-{MAX_KEY} characters")

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
            generation = self._generation
            try:
                shared = self.redis.client.get(self._rkey(key))
            except redis.RedisError:
                shared = None
            if isinstance(shared, bytes) and len(shared) >= _EXPIRY.size:
                # Memory keeps it no longer than Redis does.
                left = _EXPIRY.unpack_from(shared)[0] - time.time()
                if left > 0:
                    value = shared[_EXPIRY.size:]
                    self._remember(key, value, min(left, self.ttl_s), generation)
                    self._note("redis")
                    return value
        self._note("miss")
        return None

    def put(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        """Keep ``value`` for ``ttl_s`` (default: the cache's TTL, which also caps it)."""
        self._check(key)
        if len(value) > self.max_value_bytes:
            raise InvalidInputError(f"a {self.name} cache value is at most "
                                    f"{self.max_value_bytes} bytes")
        ttl = self.ttl_s if ttl_s is None else min(float(ttl_s), self.ttl_s)
        if not ttl > 0:
            raise InvalidInputError("ttl_s must be positive")
        self._remember(key, value, ttl)
        if self.redis is not None and self.redis.up:
            try:  # a cache: on failure memory still has it
                pipe = self.redis.client.pipeline(transaction=False)
                pipe.set(self._rkey(key), _EXPIRY.pack(time.time() + ttl) + value,
                         px=max(1, int(ttl * 1000)))
                pipe.publish(INVALIDATIONS, f"{self.redis.node_id} {self._prefix}{key}")
                pipe.execute()
            except redis.RedisError:
                pass

    def delete(self, key: str) -> bool:
        """Drop ``key`` here and, when Redis is up, everywhere; whether it was there."""
        self._check(key)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old[1])
        existed = old is not None and old[0] >= time.monotonic()
        if self.redis is not None and self.redis.up:
            try:
                pipe = self.redis.client.pipeline(transaction=False)
                pipe.delete(self._rkey(key))
                pipe.publish(INVALIDATIONS, f"{self.redis.node_id} {self._prefix}{key}")
                existed = bool(pipe.execute()[0]) or existed
            except redis.RedisError:
                pass
        return existed

    def stats(self) -> dict[str, Any]:
        with self._lock:
            entries, size = len(self._items), self._bytes
        return {"entries": entries, "bytes": size, "memory_hits": self.hits["memory"],
                "redis_hits": self.hits["redis"], "misses": self.misses,
                "max_entries": self.max_entries, "max_bytes": self.max_bytes,
                "ttl_s": self.ttl_s}

    def _invalidate(self, name: str) -> None:
        self._generation += 1  # a fill read from Redis before this is dropped
        if name == "*":
            with self._lock:
                self._items.clear()
                self._bytes = 0
        elif name.startswith(self._prefix):
            with self._lock:
                old = self._items.pop(name[len(self._prefix):], None)
                if old is not None:
                    self._bytes -= len(old[1])

    def _remember(self, key: str, value: bytes, ttl_s: float,
                  generation: int | None = None) -> None:
        with self._lock:
            if generation is not None and generation != self._generation:
                return
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old[1])
            self._items[key] = (time.monotonic() + ttl_s, value)
            self._bytes += len(value)
            while self._items and (len(self._items) > self.max_entries
                                   or self._bytes > self.max_bytes):
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= len(dropped)
