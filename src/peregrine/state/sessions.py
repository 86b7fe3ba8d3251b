"""Sessions across the tiers: L1 memory -> L2 Redis -> L3 local durable store.

Appends are written through: the local store first (durable per the policy,
so nothing acknowledged is lost), then Redis (skipped while Redis is down;
the syncer replays it later), then memory. Reads go memory -> Redis -> local
store, and fill memory on the way back. The syncer thread probes a down Redis
and replays what it missed (turns, then deletions), so turns appended on this
node while Redis was down become readable from the other nodes once it is back.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import Any

from peregrine.core.errors import InvalidInputError
from peregrine.state.local import LocalStore
from peregrine.state.memory import MemoryTier
from peregrine.state.settings import StateSettings
from peregrine.state.shared import RedisDown, RedisTier
from peregrine.state.turns import Turn

log = logging.getLogger("peregrine.state")

MAX_READ = 1000  # turns one read may ask for
MAX_ROLE = 64
_L1_TTL_S = 300.0  # memory is refreshed at least this often, invalidations or not
_BEHIND_FLUSH_S = 0.02  # write-behind: how often appends are flushed to Redis


class SessionStore:
    def __init__(self, settings: StateSettings, local: LocalStore,
                 redis_tier: RedisTier | None, metrics: Any = None) -> None:
        self.settings = settings
        self.local = local
        self.redis = redis_tier
        self.memory = MemoryTier(settings.l1_sessions, min(_L1_TTL_S, settings.session_ttl_s),
                                 settings.max_turns)
        self.metrics = metrics
        self.behind = settings.write_mode == "behind"
        # Children looked up once: a labelled lookup per read costs a microsecond.
        self._read_counters = ({t: metrics.reads.labels(t) for t in ("memory", "redis", "local")}
                               if metrics is not None else {})
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None
        if redis_tier is not None:
            self.sync_once()
            redis_tier.listen(self._invalidate)
            self._syncer = threading.Thread(target=self._sync_loop, name="state-sync",
                                            daemon=True)
            self._syncer.start()

    def _count(self, tier: str) -> None:
        if self.metrics is not None:
            self._read_counters[tier].inc()

    def _changed_elsewhere(self, sid: str) -> bool:
        """Other processes on this node share the local store: drop from memory what
        they wrote since the last look, and say whether ``sid`` was among it. So a
        turn appended through any of them is in the next read through this one
        (with or without Redis)."""
        changed = self.local.changed_elsewhere()
        if changed is None:
            self.memory.clear()
            return True
        for other in changed:
            self.memory.forget(other)
        return sid in changed

    def _invalidate(self, sid: str) -> None:
        if sid == "*":
            self.memory.clear()
        elif not sid.startswith("c:"):  # a cache entry's name: not a session
            self.memory.forget(sid)

    # -- the API ------------------------------------------------------------------
    def append(self, sid: str, role: str, content: str) -> Turn:
        if not isinstance(role, str) or not 1 <= len(role) <= MAX_ROLE:
            raise InvalidInputError(f"role must be a string of 1-{MAX_ROLE} characters")
        if not isinstance(content, str):
            raise InvalidInputError("content must be a string")
        if len(content.encode()) > self.settings.max_turn_bytes:
            raise InvalidInputError(f"content is over {self.settings.max_turn_bytes} bytes "
                                    "(state.max_turn_bytes)")
        turn = Turn(uuid.uuid4().hex, role, content, time.time())
        self.local.append(sid, turn)
        if self.redis is not None and self.redis.up and not self.behind:
            try:
                self.redis.add([(sid, turn)])
                self.local.mark_synced([(sid, turn)])
            except RedisDown:
                self._degraded()
        self.memory.append(sid, turn)
        self.local.absorb_own_writes()
        return turn

    def last(self, sid: str, n: int) -> list[Turn]:
        if not 0 <= n <= MAX_READ:
            raise InvalidInputError(f"last must be 0..{MAX_READ}")
        found = self.memory.last(sid, n)
        # Only an answer from memory can be stale; the tiers below are read fresh.
        if found is not None and not self._changed_elsewhere(sid):
            self._count("memory")
            return found
        window = max(n, 1)
        generation = self.memory.generation
        if self.redis is not None and self.redis.up:
            try:
                turns = self.redis.last(sid, window)
                if self.behind:  # this node's turns not flushed yet: read your writes
                    turns = _merge(turns, self.local.unsynced_of(sid))[-window:]
                if turns:
                    self._count("redis")
                    self.memory.put(sid, turns, complete=len(turns) < window,
                                    generation=generation)
                    return turns[-n:] if n else []
            except RedisDown:
                self._degraded()
        turns, total = self.local.last(sid, window)
        self._count("local")
        if turns:
            self.memory.put(sid, turns, complete=total <= len(turns), generation=generation)
        return turns[-n:] if n else []

    def delete(self, sid: str) -> bool:
        existed = bool(self.last(sid, 1))
        self.local.delete(sid)
        self.memory.forget(sid)
        if self.redis is not None and self.redis.up:
            try:
                self.redis.delete([sid])
                self.local.drop_tombstones([sid])
            except RedisDown:
                self._degraded()
        self.local.absorb_own_writes()
        return existed

    # -- degradation and catch-up ---------------------------------------------------
    def _degraded(self) -> None:
        if self.metrics is not None:
            self.metrics.redis_up.set(0)

    def _sync_loop(self) -> None:
        assert self.redis is not None
        every = min(self.settings.retry_s, _BEHIND_FLUSH_S) if self.behind else \
            self.settings.retry_s
        while not self._stop.wait(every):
            try:
                self.sync_once()
            except Exception:  # keep the loop alive whatever happens
                log.exception("state sync failed")

    def sync_once(self) -> int:
        """While Redis is down: probe it; once it answers, replay the turns and
        deletions it missed, and only then mark it up. Returns the turns replayed."""
        assert self.redis is not None
        if self.redis.up:
            return self._flush() if self.behind else 0
        if not self.redis.probe():
            if self.metrics is not None:
                self.metrics.redis_up.set(0)
                self.metrics.pending.set(self.local.pending())
            return 0
        try:
            replayed = self._push_unsynced(force=True)
            while sids := self.local.tombstones():
                self.redis.delete(sids, force=True)
                self.local.drop_tombstones(sids)
        except RedisDown:
            return 0
        self.memory.clear()  # other nodes' writes meanwhile were not announced
        self.redis.mark_up()
        try:  # appends that came between the last batch and mark_up
            replayed += self._push_unsynced()
        except RedisDown:
            return replayed
        if self.metrics is not None:
            self.metrics.redis_up.set(1)
            self.metrics.pending.set(0)
            self.metrics.replayed.inc(replayed)
        if replayed:
            log.warning("replayed %d turns to redis", replayed)
        return replayed

    def _push_unsynced(self, force: bool = False) -> int:
        """Every turn Redis has not acknowledged, in batches; how many. Raises
        ``RedisDown`` on the way (what was pushed stays marked)."""
        assert self.redis is not None
        pushed = 0
        while batch := self.local.unsynced():
            self.redis.add(batch, force=force)
            self.local.mark_synced(batch)
            pushed += len(batch)
        return pushed

    def _flush(self) -> int:
        """Write-behind: the turns appended since the last flush."""
        try:
            return self._push_unsynced()
        except RedisDown:
            self._degraded()
            return 0

    def close(self) -> None:
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join(5)
        if self.behind and self.redis is not None and self.redis.up:
            self._flush()  # what is left, before the process goes
        if self.redis is not None:
            self.redis.close()


def _merge(a: list[Turn], b: list[Turn]) -> list[Turn]:
    if not b:
        return a
    seen = {t.turn_id for t in a}
    return sorted([*a, *(t for t in b if t.turn_id not in seen)],
                  key=lambda t: (t.ts, t.turn_id))


def node_id() -> str:
    return f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
