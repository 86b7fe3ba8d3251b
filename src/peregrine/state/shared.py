"""L2: Redis, shared by every node on it.

A session is a sorted set ``pg:t:<session>`` of packed turns scored by their
time: adding a turn twice is a no-op (so a replay after an outage cannot
duplicate), and turns from several nodes come back in one order. Each write
publishes the session on ``pg:inval`` so the other nodes drop it from memory.

Any Redis error or a call slower than ``timeout_s`` marks the tier down: calls
fail fast (no waiting on a dead server) until the syncer's next probe succeeds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, cast

import redis

from peregrine.state.turns import Turn

log = logging.getLogger("peregrine.state")

INVALIDATIONS = "pg:inval"


class RedisDown(Exception):
    """The shared tier is unavailable; the local tiers answer."""


def _key(sid: str) -> str:
    return f"pg:t:{sid}"


class RedisTier:
    def __init__(self, url: str, timeout_s: float, ttl_s: float, max_turns: int,
                 node_id: str) -> None:
        self.url, self.ttl_ms, self.max_turns = url, int(ttl_s * 1000), max_turns
        self.node_id = node_id
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                           socket_connect_timeout=timeout_s,
                                           health_check_interval=0)
        self.up = False
        self._pubsub_thread: Any = None
        self._listeners: list[Callable[[str], None]] = []
        self._stop = threading.Event()

    def _fail(self, exc: BaseException) -> RedisDown:
        if self.up:
            log.warning("redis down: %s; serving from the local tiers", exc,
                        extra={"fields": {"redis": self.url}})
        self.up = False
        return RedisDown(str(exc))

    def probe(self) -> bool:
        """Whether Redis answers; it is marked up only by ``mark_up``, once what it
        missed has been replayed (so a read never skips a turn it missed)."""
        try:
            self.client.ping()
        except redis.RedisError:
            self.up = False
            return False
        return True

    def agree_secret(self, proposal: bytes) -> bytes | None:
        """The nodes' common HMAC secret: ``proposal`` unless one is set already;
        None when Redis cannot be reached."""
        try:
            self.client.set("pg:secret", proposal, nx=True)
            agreed = self.client.get("pg:secret")
        except redis.RedisError:
            return None
        if not agreed:
            return None
        return agreed if isinstance(agreed, bytes) else str(agreed).encode()

    def mark_up(self) -> None:
        if not self.up:
            log.warning("redis up", extra={"fields": {"redis": self.url}})
        self.up = True

    def add(self, items: list[tuple[str, Turn]], force: bool = False) -> None:
        """Turns into their sessions (idempotent), trimmed, TTL slid, others told;
        ``force`` tries even while marked down (the replay)."""
        if not self.up and not force:
            raise RedisDown("redis is down")
        try:
            pipe = self.client.pipeline(transaction=False)
            sids = []
            for sid, turn in items:
                pipe.zadd(_key(sid), {turn.pack(): turn.ts})
                if sid not in sids:
                    sids.append(sid)
            for sid in sids:
                pipe.zremrangebyrank(_key(sid), 0, -self.max_turns - 1)
                pipe.pexpire(_key(sid), self.ttl_ms)
                pipe.publish(INVALIDATIONS, f"{self.node_id} {sid}")
            pipe.execute()
        except redis.RedisError as exc:
            raise self._fail(exc) from None

    def last(self, sid: str, n: int) -> list[Turn]:
        """The last ``n`` turns: one ZRANGE round trip (fewer back means that is all
        of them). The TTL slides with writes; reads on a node mostly hit memory."""
        if not self.up:
            raise RedisDown("redis is down")
        try:
            # execute_command: zrange's option handling costs more than the decode
            packed = self.client.execute_command(  # type: ignore[no-untyped-call]
                "ZRANGE", "pg:t:" + sid, -n, -1)
        except redis.RedisError as exc:
            raise self._fail(exc) from None
        return Turn.unpack_many(cast(list[bytes], packed))

    def delete(self, sids: list[str], force: bool = False) -> None:
        if not self.up and not force:
            raise RedisDown("redis is down")
        try:
            pipe = self.client.pipeline(transaction=False)
            for sid in sids:
                pipe.delete(_key(sid))
                pipe.publish(INVALIDATIONS, f"{self.node_id} {sid}")
            pipe.execute()
        except redis.RedisError as exc:
            raise self._fail(exc) from None

    def listen(self, on_invalidate: Callable[[str], None]) -> None:
        """Call ``on_invalidate(name)`` for what other nodes wrote (a session id, or
        ``c:<cache>:<key>``; ``*`` after a gap: drop everything). One thread, which
        resubscribes after Redis comes back, serves every listener."""
        self._listeners.append(on_invalidate)
        if self._pubsub_thread is not None:
            return

        def tell(name: str) -> None:
            for listener in self._listeners:
                listener(name)

        def run() -> None:
            subscribed_before = False
            while not self._stop.is_set():
                try:
                    pubsub = self.client.pubsub(  # type: ignore[no-untyped-call]
                        ignore_subscribe_messages=True)
                    pubsub.subscribe(INVALIDATIONS)
                    if subscribed_before:  # messages may have been missed meanwhile
                        tell("*")
                    subscribed_before = True
                    while not self._stop.is_set():
                        message = pubsub.get_message(timeout=0.5)
                        if message and message.get("type") == "message":
                            node, _, name = message["data"].decode().partition(" ")
                            if node != self.node_id:
                                tell(name)
                except (redis.RedisError, OSError, ValueError):
                    self._stop.wait(0.5)

        self._pubsub_thread = threading.Thread(target=run, name="state-invalidations",
                                               daemon=True)
        self._pubsub_thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._pubsub_thread is not None:
            self._pubsub_thread.join(2)
        self.client.close()
