"""L3: the node's durable store, SQLite in WAL mode.

Every turn is written here first, so a node keeps working with Redis or the
network down and loses nothing on a crash: with ``durable`` the commit is
fsynced (``synchronous=FULL``) before the append returns, with ``relaxed`` it
survives the process but not the machine. ``synced`` marks what Redis has
acknowledged; the rest is replayed to Redis when it is back. Deletions are kept
as tombstones until Redis has them too.

Several processes of one node may share the store. Each write also records its
session in ``changes`` with the writer's origin, and ``changed_elsewhere`` tells a
process which sessions the others wrote since it last asked, so it can drop them
from its memory tier: a cheap ``PRAGMA data_version`` on a connection of its
own says whether there is anything to read at all.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from peregrine.state.turns import Turn

_SCHEMA = """
CREATE TABLE IF NOT EXISTS turns (
    session TEXT NOT NULL, ts REAL NOT NULL, turn_id TEXT NOT NULL,
    role TEXT NOT NULL, content TEXT NOT NULL, synced INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (session, ts, turn_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS turns_unsynced ON turns (synced) WHERE synced = 0;
CREATE TABLE IF NOT EXISTS sessions (
    session TEXT PRIMARY KEY, expires REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deleted (
    session TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, session TEXT NOT NULL, origin TEXT NOT NULL);
"""
_CHANGES_KEPT = 8192  # changes other processes may still have to read


class LocalStore:
    def __init__(self, path: Path, durable: bool, ttl_s: float, max_turns: int,
                 origin: str = "") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.ttl_s, self.max_turns, self.origin = ttl_s, max_turns, origin
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                   timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        # The watcher: its own connection, so a check never waits behind an fsync.
        self._watch = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                      timeout=30)
        self._watch_lock = threading.Lock()
        self._version = self._watch.execute("PRAGMA data_version").fetchone()[0]
        self._seen = int(self._watch.execute("SELECT coalesce(max(seq), 0) FROM changes"
                                             ).fetchone()[0])

    def close(self) -> None:
        with self._lock, self._watch_lock:
            self._db.close()
            self._watch.close()

    def _changed(self, sid: str) -> None:
        """Record a write for the other processes (inside the write's transaction)."""
        seq = self._db.execute("INSERT INTO changes (session, origin) VALUES (?, ?)",
                               (sid, self.origin)).lastrowid or 0
        if seq % 1024 == 0:
            self._db.execute("DELETE FROM changes WHERE seq <= ?", (seq - _CHANGES_KEPT,))

    def changed_elsewhere(self) -> list[str] | None:
        """Sessions other processes wrote since the last call ([] mostly, in a few
        microseconds); None when too many changed to tell (forget them all)."""
        with self._watch_lock:
            version = self._watch.execute("PRAGMA data_version").fetchone()[0]
            if version == self._version:
                return []
            self._version = version
            rows = self._watch.execute("SELECT seq, session, origin FROM changes WHERE seq > ?",
                                       (self._seen,)).fetchall()
            if not rows:
                return []
            # AUTOINCREMENT leaves no holes (a rolled back insert takes its number
            # back), so a hole before the first row means the trim took unread rows.
            gap = rows[0][0] > self._seen + 1
            self._seen = rows[-1][0]
        if gap:
            return None
        return list(dict.fromkeys(session for _, session, origin in rows
                                  if origin != self.origin))

    def absorb_own_writes(self) -> None:
        """After this process's own writes: when no other process wrote since the last
        check, move the watcher past them, so the next read skips the change query.
        The version is read before the count, so nothing the count missed is absorbed."""
        with self._watch_lock:
            version = self._watch.execute("PRAGMA data_version").fetchone()[0]
            if version == self._version:
                return
            foreign, first, last = self._watch.execute(
                "SELECT count(*) FILTER (WHERE origin != ?), min(seq), max(seq) FROM changes "
                "WHERE seq > ?", (self.origin, self._seen)).fetchone()
            # Absorb only when every change since the last look is there (no trim hole
            # that might have held another process's) and all of them are this one's.
            if foreign == 0 and (first is None or first == self._seen + 1):
                self._version = version
                self._seen = max(self._seen, int(last or 0))

    def append(self, sid: str, turn: Turn) -> None:
        """Durable (per the policy) when this returns."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT OR IGNORE INTO turns VALUES (?, ?, ?, ?, ?, 0)",
                           (sid, turn.ts, turn.turn_id, turn.role, turn.content))
                db.execute("INSERT INTO sessions VALUES (?, ?) ON CONFLICT(session) "
                           "DO UPDATE SET expires = excluded.expires",
                           (sid, time.time() + self.ttl_s))
                db.execute("DELETE FROM deleted WHERE session = ?", (sid,))
                self._changed(sid)
                db.execute("DELETE FROM turns WHERE session = ? AND (ts, turn_id) IN "
                           "(SELECT ts, turn_id FROM turns WHERE session = ? "
                           "ORDER BY ts DESC, turn_id DESC LIMIT -1 OFFSET ?)",
                           (sid, sid, self.max_turns))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def last(self, sid: str, n: int) -> tuple[list[Turn], int]:
        """The last ``n`` turns oldest first, and how many the session has; an expired
        session reads as empty."""
        with self._lock:
            row = self._db.execute("SELECT expires FROM sessions WHERE session = ?",
                                   (sid,)).fetchone()
            if row is None or row[0] < time.time():
                return [], 0
            rows = self._db.execute(
                "SELECT turn_id, role, content, ts FROM turns WHERE session = ? "
                "ORDER BY ts DESC, turn_id DESC LIMIT ?", (sid, n)).fetchall()
            total = self._db.execute("SELECT count(*) FROM turns WHERE session = ?",
                                     (sid,)).fetchone()[0]
            self._db.execute("UPDATE sessions SET expires = ? WHERE session = ?",
                             (time.time() + self.ttl_s, sid))
        return [Turn(t, r, c, ts) for t, r, c, ts in reversed(rows)], int(total)

    def delete(self, sid: str) -> bool:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                gone = db.execute("DELETE FROM turns WHERE session = ?", (sid,)).rowcount
                gone += db.execute("DELETE FROM sessions WHERE session = ?", (sid,)).rowcount
                db.execute("INSERT OR REPLACE INTO deleted VALUES (?, ?)", (sid, time.time()))
                self._changed(sid)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return gone > 0

    # -- what Redis has not acknowledged yet ---------------------------------------
    def unsynced(self, limit: int = 500) -> list[tuple[str, Turn]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT session, turn_id, role, content, ts FROM turns WHERE synced = 0 "
                "ORDER BY ts LIMIT ?", (limit,)).fetchall()
        return [(s, Turn(t, r, c, ts)) for s, t, r, c, ts in rows]

    def unsynced_of(self, sid: str) -> list[Turn]:
        """This node's turns of one session that Redis does not have yet."""
        with self._lock:
            rows = self._db.execute(
                "SELECT turn_id, role, content, ts FROM turns WHERE synced = 0 AND session = ? "
                "ORDER BY ts, turn_id", (sid,)).fetchall()
        return [Turn(t, r, c, ts) for t, r, c, ts in rows]

    def mark_synced(self, items: list[tuple[str, Turn]]) -> None:
        with self._lock:
            self._db.executemany("UPDATE turns SET synced = 1 WHERE session = ? AND ts = ? "
                                 "AND turn_id = ?", [(s, t.ts, t.turn_id) for s, t in items])

    def tombstones(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT session FROM deleted LIMIT 500")]

    def drop_tombstones(self, sids: list[str]) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM deleted WHERE session = ?", [(s,) for s in sids])

    def pending(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM turns WHERE synced = 0"
                                        ).fetchone()[0])
