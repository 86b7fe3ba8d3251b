"""L1: the recent turns of the hottest sessions, in process memory (LRU + TTL)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from peregrine.state.turns import Turn

#: Turns kept per session in memory: enough for any prompt window.
WINDOW = 256


@dataclass(slots=True)
class _Entry:
    turns: list[Turn]
    complete: bool  # the list holds every turn of the session
    expires: float = field(default=0.0)


class MemoryTier:
    def __init__(self, max_sessions: int, ttl_s: float, max_turns: int) -> None:
        self.max_sessions, self.ttl_s = max_sessions, ttl_s
        self.max_turns = max_turns
        self.window = min(max_turns, WINDOW)
        self._items: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0

    def last(self, sid: str, n: int) -> list[Turn] | None:
        """The last ``n`` turns, or None when memory cannot answer for sure."""
        with self._lock:
            entry = self._items.get(sid)
            if entry is None:
                return None
            now = time.monotonic()
            if entry.expires < now:
                del self._items[sid]
                return None
            if n > len(entry.turns) and not entry.complete:
                return None
            # The expiry does not slide: memory is re-read from below at least every
            # ttl_s, whatever invalidation might have been missed.
            self._items.move_to_end(sid)
            return entry.turns[-n:] if n else []

    @property
    def generation(self) -> int:
        """Bumped by every invalidation: a reader notes it before reading a lower tier
        and passes it to ``put``, which drops the fill if an invalidation came in
        between (the read may predate the write that caused it)."""
        return self._generation

    def put(self, sid: str, turns: list[Turn], complete: bool,
            generation: int | None = None) -> None:
        with self._lock:
            if generation is not None and generation != self._generation:
                return
            self._items[sid] = _Entry(turns[-self.window:],
                                      complete and len(turns) <= self.window,
                                      time.monotonic() + self.ttl_s)
            self._items.move_to_end(sid)
            while len(self._items) > self.max_sessions:
                self._items.popitem(last=False)

    def append(self, sid: str, turn: Turn) -> None:
        """Add a turn to a cached session (a session not cached stays uncached)."""
        with self._lock:
            entry = self._items.get(sid)
            if entry is None:
                return
            entry.turns.append(turn)
            if len(entry.turns) > self.window:
                del entry.turns[: len(entry.turns) - self.window]
                # Past the window memory no longer holds every turn, unless the session
                # itself is capped at the window (its oldest turn is gone everywhere).
                entry.complete = entry.complete and self.window == self.max_turns

    def forget(self, sid: str) -> None:
        with self._lock:
            self._generation += 1
            self._items.pop(sid, None)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._items.clear()
