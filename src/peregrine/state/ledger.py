"""Idempotent counters for projections: sums by key, applied once per event.

A projection of an event stream (e.g. net positions per symbol from accepted
orders) applies each event's deltas together with the event's sequence in one
transaction. An event at or below the namespace's cursor has been applied
already and changes nothing, so replaying a stream, or two processes reading
it at once, gives the same sums. Kept in the node's local store (SQLite in WAL
mode, not fsynced per commit: a projection can always be rebuilt from its
stream, and after a crash it resumes from its cursor, which commits with the
sums), so the sums survive restarts.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    ns TEXT NOT NULL, key TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (ns, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_cursor (ns TEXT PRIMARY KEY, seq INTEGER NOT NULL)
    WITHOUT ROWID;
"""


class Ledger:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                   timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def apply(self, ns: str, seq: int, deltas: dict[str, float]) -> bool:
        """Add ``deltas`` once for event ``seq`` (increasing); False when it was
        applied before."""
        return self.apply_many(ns, [(seq, deltas)]) == 1

    def apply_many(self, ns: str, events: list[tuple[int, dict[str, float]]]) -> int:
        """Events in stream order, in one transaction; those at or below the cursor
        are skipped. How many were applied."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT seq FROM ledger_cursor WHERE ns = ?", (ns,)).fetchone()
                cursor = row[0] if row is not None else 0
                totals: dict[str, float] = {}
                applied = 0
                for seq, deltas in events:
                    if seq <= cursor:
                        continue
                    cursor = seq
                    applied += 1
                    for key, value in deltas.items():
                        totals[key] = totals.get(key, 0.0) + float(value)
                if applied:
                    db.executemany("INSERT INTO ledger VALUES (?, ?, ?) ON CONFLICT(ns, key) "
                                   "DO UPDATE SET value = value + excluded.value",
                                   [(ns, k, v) for k, v in totals.items()])
                    db.execute("INSERT INTO ledger_cursor VALUES (?, ?) ON CONFLICT(ns) "
                               "DO UPDATE SET seq = excluded.seq", (ns, cursor))
                db.execute("COMMIT")
                return applied
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def get(self, ns: str, key: str) -> float:
        with self._lock:
            row = self._db.execute("SELECT value FROM ledger WHERE ns = ? AND key = ?",
                                   (ns, key)).fetchone()
        return float(row[0]) if row else 0.0

    def all(self, ns: str) -> dict[str, float]:
        with self._lock:
            return {k: float(v) for k, v in self._db.execute(
                "SELECT key, value FROM ledger WHERE ns = ?", (ns,))}

    def cursor(self, ns: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT seq FROM ledger_cursor WHERE ns = ?",
                                   (ns,)).fetchone()
        return int(row[0]) if row else 0

    def reset(self, ns: str) -> None:
        """Forget a namespace (to rebuild it from the start of its stream)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM ledger WHERE ns = ?", (ns,))
            self._db.execute("DELETE FROM ledger_cursor WHERE ns = ?", (ns,))
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()
