"""Shared documents for edge nodes: CRDTs (pycrdt, the Yjs/Yrs binding) synced
through a hub on NATS JetStream, with no coordinator.

Each node holds a replica (``pycrdt.Doc``). A local edit produces a Yjs update.
The update is first kept in the node's local store (``pending``), then published
to ``pg.crdt.<doc>``, where the hub's stream ``PG_CRDT`` keeps it. Every node
reads that stream from where it left off and applies the others' updates.
Updates commute and are idempotent, so replicas converge whatever the order,
duplicates and delays. While the bus is unreachable, edits go on locally. On
reconnect the node publishes what is pending and reads what it missed. The
offline edits merge, since that is what a CRDT does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

from nats.js import api

from peregrine.core.errors import InvalidInputError

log = logging.getLogger("peregrine.state")

STREAM = "PG_CRDT"
SUBJECT = "pg.crdt"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ORIGIN = "Peregrine-Crdt-Origin"


class UpdateLog:
    """The node's durable record of a document: every update it has applied, its
    own not yet published ones, and how far it has read the hub."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript("""
            CREATE TABLE IF NOT EXISTS updates (doc TEXT, id INTEGER PRIMARY KEY,
                data BLOB NOT NULL, pending INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS cursor (doc TEXT PRIMARY KEY, seq INTEGER NOT NULL);
            CREATE INDEX IF NOT EXISTS updates_doc ON updates (doc, id);
        """)
        self._lock = threading.Lock()

    def add(self, doc: str, data: bytes, pending: bool) -> int:
        with self._lock:
            cur = self._db.execute("INSERT INTO updates (doc, data, pending) VALUES (?, ?, ?)",
                                   (doc, data, int(pending)))
            return int(cur.lastrowid or 0)

    def all(self, doc: str) -> list[bytes]:
        with self._lock:
            return [r[0] for r in self._db.execute(
                "SELECT data FROM updates WHERE doc = ? ORDER BY id", (doc,))]

    def pending(self, doc: str) -> list[tuple[int, bytes]]:
        with self._lock:
            return list(self._db.execute(
                "SELECT id, data FROM updates WHERE doc = ? AND pending = 1 ORDER BY id",
                (doc,)))

    def published(self, update_id: int) -> None:
        with self._lock:
            self._db.execute("UPDATE updates SET pending = 0 WHERE id = ?", (update_id,))

    def docs_pending(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute(
                "SELECT DISTINCT doc FROM updates WHERE pending = 1")]

    def size(self, doc: str) -> int:
        """Bytes of updates kept for ``doc``."""
        with self._lock:
            row = self._db.execute("SELECT coalesce(sum(length(data)), 0) FROM updates "
                                   "WHERE doc = ?", (doc,)).fetchone()
        return int(row[0])

    def cursor(self, doc: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT seq FROM cursor WHERE doc = ?", (doc,)).fetchone()
        return int(row[0]) if row else 0

    def advance(self, doc: str, seq: int) -> None:
        with self._lock:
            self._db.execute("INSERT INTO cursor VALUES (?, ?) ON CONFLICT(doc) DO UPDATE "
                             "SET seq = max(seq, excluded.seq)", (doc, seq))

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SharedDoc:
    """One replicated document on one node. Edit ``doc`` (a ``pycrdt.Doc``) with
    pycrdt's API inside the event loop that runs ``connect``/``sync``."""

    def __init__(self, name: str, log_store: UpdateLog, node: str) -> None:
        if not _NAME.match(name):
            raise InvalidInputError(f"document name {name!r}: 1-64 of A-Z a-z 0-9 _ -")
        from pycrdt import Doc

        self.name, self.node, self.store = name, node, log_store
        self.doc: Any = Doc()
        self._applying = False
        self._js: Any = None
        self._sub: Any = None
        for update in log_store.all(name):  # what this node had, online or not
            self._apply(update)
        self._subscription = self.doc.observe(self._on_change)

    # -- local edits -------------------------------------------------------------
    def _on_change(self, event: Any) -> None:
        if self._applying:
            return
        update_id = self.store.add(self.name, bytes(event.update), pending=True)
        if self._js is not None:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(self._publish(update_id,
                                                                     bytes(event.update)))

    async def _publish(self, update_id: int, data: bytes) -> None:
        try:
            await self._js.publish(f"{SUBJECT}.{self.name}", data,
                                   headers={_ORIGIN: self.node})
        except Exception as exc:  # offline: it stays pending for the next sync
            log.debug("crdt publish deferred: %s", exc)
            return
        self.store.published(update_id)

    def _apply(self, update: bytes) -> None:
        self._applying = True
        try:
            self.doc.apply_update(update)
        finally:
            self._applying = False

    # -- the hub ---------------------------------------------------------------------
    async def connect(self, js: Any) -> None:
        """Join the hub: publish what is pending, then follow the stream from this
        node's cursor (reading what was missed while away)."""
        await ensure_hub(js)
        self._js = js
        await self.sync()
        start = self.store.cursor(self.name) + 1
        self._sub = await js.subscribe(
            f"{SUBJECT}.{self.name}", cb=self._on_remote, ordered_consumer=True,
            config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                                      opt_start_seq=start))

    async def _on_remote(self, msg: Any) -> None:
        if (msg.headers or {}).get(_ORIGIN) != self.node:
            self.store.add(self.name, msg.data, pending=False)
            self._apply(msg.data)
        self.store.advance(self.name, msg.metadata.sequence.stream)

    async def sync(self) -> int:
        """Publish the local updates the hub has not acknowledged; how many."""
        sent = 0
        for update_id, data in self.store.pending(self.name):
            await self._publish(update_id, data)
            sent += 1
        return sent

    async def disconnect(self) -> None:
        """Leave the hub (edits go on locally and are published on ``connect``)."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        self._sub = None
        self._js = None


async def publish_pending(js: Any, store: UpdateLog, name: str, node: str) -> int:
    """Publish a closed document's pending updates (no replica needed); how many."""
    sent = 0
    for update_id, data in store.pending(name):
        await js.publish(f"{SUBJECT}.{name}", data, headers={_ORIGIN: node})
        store.published(update_id)
        sent += 1
    return sent


async def ensure_hub(js: Any) -> None:
    try:
        await js.stream_info(STREAM)
    except Exception:
        with contextlib.suppress(Exception):  # another node created it meanwhile
            await js.add_stream(api.StreamConfig(name=STREAM, subjects=[f"{SUBJECT}.>"],
                                                 storage=api.StorageType.FILE))
