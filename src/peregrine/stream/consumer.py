"""A continuous pull from a durable JetStream consumer, with bounded prefetch.

nats-py's ``fetch(n)`` asks for ``n`` messages and, once the first one has
come, waits for the rest until the request expires: at a low event rate a
batch left waiting for company costs tens of milliseconds of freshness. This
consumer works as the newer NATS clients' ``consume`` does instead: pull
requests are kept open ahead of need (up to ``window`` messages requested and
not yet taken), every message lands in a local buffer the moment it arrives,
and the worker takes what is there. The window is the back-pressure: nothing
more is requested while the buffer is full, so a slow pipeline stops the
server from sending instead of growing memory.

Protocol: a request is ``{"batch", "expires", "idle_heartbeat"}`` published
to ``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`` with this consumer's
inbox as reply. Messages arrive on the inbox; so do status messages: 100 (idle
heartbeat), and 404/408/409 ending a request with ``Nats-Pending-Messages``
credits left unused. If nothing, not even a heartbeat, arrives for a while
(the connection was lost and the server forgot the requests) the credits are
written off and requested again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import Any

import orjson

log = logging.getLogger("peregrine.stream")

_STATUS = "Status"
_PENDING = "Nats-Pending-Messages"


class PullConsumer:
    def __init__(self, nc: Any, stream: str, consumer: str, window: int,
                 expires_s: float = 10.0, heartbeat_s: float = 2.0,
                 api_prefix: str = "$JS.API") -> None:
        self.nc = nc
        self.window = max(1, window)
        self.expires_s, self.heartbeat_s = expires_s, heartbeat_s
        self.subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.buffer: collections.deque[Any] = collections.deque()
        self.arrived = asyncio.Event()
        self.requested = 0  # credits asked for and not yet used or returned
        self.last_heard = time.monotonic()
        self.inbox = ""
        self.sub: Any = None
        self.closing = False
        self.failure = ""  # the last refusal from the server (consumer deleted...)
        self.refill_after = 0.0  # no new request before this (after a refusal)

    async def start(self) -> None:
        self.inbox = self.nc.new_inbox()
        self.sub = await self.nc.subscribe(self.inbox, cb=self._on_msg)
        await self._refill()

    async def _on_msg(self, msg: Any) -> None:
        self.last_heard = time.monotonic()
        status = msg.headers.get(_STATUS) if msg.headers else None
        if not status:
            self.requested = max(0, self.requested - 1)
            if self.closing:  # arrived after stop: straight back to the server
                with contextlib.suppress(Exception):
                    await msg.nak()
                return
            self.buffer.append(msg)
            self.arrived.set()
            return
        if status == "100":  # idle heartbeat: the requests are alive
            return
        pending = msg.headers.get(_PENDING)
        description = msg.headers.get("Description") or ""
        if pending is not None and pending.isdigit():
            # 404 / 408 / 409 ending one request: its unused credits come back, and
            # it is asked again at once.
            self.requested = max(0, self.requested - int(pending))
            with contextlib.suppress(Exception):
                await self._refill()
            return
        # No credits named: the consumer is gone ("409 Consumer Deleted", "503 No
        # Responders"), or the request was refused (400, "409 Exceeded MaxWaiting").
        # Asking again at once would loop as fast as the network goes: wait instead.
        self.requested = 0
        self.failure = f"{status} {description}".strip()
        self.refill_after = time.monotonic() + 1.0
        log.warning("pull refused: %s", self.failure)

    def on_reconnect(self) -> None:
        """The server forgot this connection's pull requests: ask afresh."""
        self.requested = 0
        self.last_heard = time.monotonic()

    async def _refill(self) -> None:
        """Ask for more once at least half the window is free."""
        now = time.monotonic()
        if self.closing or now < self.refill_after or not self.nc.is_connected:
            return
        quiet = now - self.last_heard
        if self.requested and quiet > self.expires_s + 2 * self.heartbeat_s:
            self.requested = 0  # nothing heard for longer than a request lives
            self.last_heard = now
        free = self.window - self.requested - len(self.buffer)
        if free < max(1, self.window // 2):
            return
        body = orjson.dumps({"batch": free, "expires": int(self.expires_s * 1e9),
                             "idle_heartbeat": int(self.heartbeat_s * 1e9)})
        await self.nc.publish(self.subject, body, reply=self.inbox)
        self.requested += free  # counted once asked for

    async def next_batch(self, max_n: int, wait_s: float, timeout_s: float) -> list[Any]:
        """Up to ``max_n`` messages: waits up to ``timeout_s`` for the first, then up
        to ``wait_s`` more for company (none when ``wait_s`` is 0)."""
        if not self.buffer:
            self.arrived.clear()
            await self._refill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), timeout_s)
        if self.buffer and len(self.buffer) < max_n and wait_s > 0:
            deadline = time.monotonic() + wait_s
            while len(self.buffer) < max_n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.arrived.wait(), left)
        out = [self.buffer.popleft() for _ in range(min(max_n, len(self.buffer)))]
        if out:
            await self._refill()
        return out

    def take_failure(self) -> str:
        """A refusal since the last call ("" if none); the worker restarts on one."""
        failure, self.failure = self.failure, ""
        return failure

    async def stop(self, drain_s: float = 0.5) -> list[Any]:
        """Stop asking; returns what was buffered and not taken (to hand back).
        Messages still arriving for the open requests during ``drain_s`` are nak'd
        as they come, so they go back at once rather than after ``ack_wait``."""
        self.closing = True
        rest = list(self.buffer)
        self.buffer.clear()
        deadline = time.monotonic() + drain_s
        while self.requested and time.monotonic() < deadline and self.nc.is_connected:
            await asyncio.sleep(0.02)
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()
            self.sub = None
        return rest
