"""Connection-level guards: header and body timeouts, a bound on open connections.

uvicorn closes idle keep-alive connections, but a connection that never
finishes its request is never closed: one that sends nothing, half a request
line, or fewer body bytes than it declared holds a socket (and a file
descriptor) forever, and a few hundred of them lock everyone else out. This
protocol, uvicorn's httptools protocol with three additions, closes them:

* the request's headers must be complete ``header_timeout`` seconds after the
  connection opened or the request began (a total, so trickling bytes does not
  help);
* while a body arrives, no pause may exceed ``body_timeout``;
* beyond ``max_connections`` open connections, a new one is answered 503 and
  closed at once.

A request cut off this way gets a 408 when it had started. The timers are
armed only when a read ends mid-request, so a request that arrives in one
packet (nearly all of them) costs nothing extra.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from peregrine.edge.http.metrics import HttpMetrics

log = logging.getLogger("peregrine.http")


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int


class _Phase(Enum):
    HEADERS = 1  # waiting for (the rest of) a request's headers
    BODY = 2  # headers done, body still arriving
    IDLE = 3  # between requests (uvicorn's keep-alive timer runs) or in the app


def _raw_response(status: bytes, text: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(text)).encode() + b"\r\nconnection: close\r\n\r\n"
            + text)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits = ConnectionLimits(10.0, 30.0, 1024)
    metrics: HttpMetrics | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = _Phase.HEADERS
        self._timer: asyncio.TimerHandle | None = None
        self._seen_bytes = False
        self._counted = False  # in the open-connections gauge

    # -- connection ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            if self.metrics is not None:
                self.metrics.refused.inc()
            transport.write(_raw_response(b"503 Service Unavailable",
                                          b"Too many open connections; try again shortly"))
            transport.close()
            return
        if self.metrics is not None:
            self.metrics.connections.inc()
            self._counted = True
        self._arm(self.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self.metrics is not None and self._counted:
            self.metrics.connections.dec()
            self._counted = False
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._seen_bytes = True
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._phase is _Phase.HEADERS and self._timer is None:
            self._arm(self.limits.header_timeout_s)
        elif self._phase is _Phase.BODY:  # an idle limit: every chunk restarts it
            self._arm(self.limits.body_timeout_s)

    # -- parser callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._phase = _Phase.HEADERS
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._cancel()
        self._phase = _Phase.BODY
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel()
        self._phase = _Phase.IDLE
        super().on_message_complete()

    # -- timers ------------------------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        self._cancel()
        self._timer = self.loop.call_later(seconds, self._expired)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.transport.is_closing() or self._phase is _Phase.IDLE:
            return
        if self.flow is not None and self.flow.read_paused:
            # The server stopped reading (a pipelined request waits for the one
            # before it, or the app has not taken the body so far): not the
            # client's delay. Look again later.
            self._arm(self.limits.body_timeout_s)
            return
        phase = "headers" if self._phase is _Phase.HEADERS else "body"
        if self.metrics is not None:
            self.metrics.timeouts.labels(phase).inc()
        log.info("closing a connection that was too slow sending its request %s", phase,
                 extra={"fields": {"client": self.client}})
        if self._seen_bytes:
            self.transport.write(_raw_response(
                b"408 Request Timeout", f"Request {phase} arrived too slowly".encode()))
        self.transport.close()


def guarded_protocol(limits: ConnectionLimits,
                     metrics: HttpMetrics | None) -> type[GuardedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, with these limits."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,),
                {"limits": limits, "metrics": metrics})
