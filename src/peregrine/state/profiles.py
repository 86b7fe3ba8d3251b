"""Durable per-user and per-device settings (quantization level, locale...).

Small JSON documents by (kind, id), kept in the node's local store (SQLite,
fsynced) so they survive restarts and outages, and in a Redis hash
``pg:p:<kind>:<id>`` when Redis is configured, so every node reads the same.
A write goes to both (Redis skipped while it is down; the local copy is the
fallback on reads). Ids reach the stores only as HMACs.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Any

import orjson
import redis

from peregrine.core.errors import InvalidInputError
from peregrine.state.shared import RedisTier

MAX_BYTES = 64 * 1024
KINDS = ("user", "device")


class Profiles:
    def __init__(self, path: Path, redis_tier: RedisTier | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS profiles (key TEXT PRIMARY KEY, "
                         "doc BLOB NOT NULL) WITHOUT ROWID")
        self._lock = threading.Lock()
        self.redis = redis_tier

    def get(self, key: str) -> dict[str, Any]:
        if self.redis is not None and self.redis.up:
            try:
                found = self.redis.client.get(f"pg:p:{key}")
                if isinstance(found, bytes):
                    value: dict[str, Any] = orjson.loads(found)
                    return value
            except redis.RedisError:
                pass  # the local copy answers
        with self._lock:
            row = self._db.execute("SELECT doc FROM profiles WHERE key = ?", (key,)).fetchone()
        return dict(orjson.loads(row[0])) if row else {}

    def update(self, key: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Merge ``changes`` (a ``None`` value removes that setting); returns the result."""
        if not isinstance(changes, dict) or not all(isinstance(k, str) for k in changes):
            raise InvalidInputError("settings must be an object with string keys")
        merged = {**self.get(key), **changes}
        merged = {k: v for k, v in merged.items() if v is not None}
        doc = orjson.dumps(merged)
        if len(doc) > MAX_BYTES:
            raise InvalidInputError(f"settings are limited to {MAX_BYTES} bytes of JSON")
        with self._lock:
            self._db.execute("INSERT INTO profiles VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                             "SET doc = excluded.doc", (key, doc))
        if self.redis is not None and self.redis.up:
            # On failure the local copy is kept; other nodes see it when written again.
            with contextlib.suppress(redis.RedisError):
                self.redis.client.set(f"pg:p:{key}", doc)
        return merged

    def close(self) -> None:
        with self._lock:
            self._db.close()
