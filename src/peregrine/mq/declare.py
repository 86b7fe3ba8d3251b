"""Declaring a service: its endpoints, breakers, streams and hooks, and what one
worker saw of each endpoint (``EndpointStats``). The front door,
``peregrine.mq.service``, re-exports it and documents how to write one."""

from __future__ import annotations

import contextvars
import inspect
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from peregrine.core.errors import InvalidInputError
from peregrine.mq.breaker import CircuitBreaker
from peregrine.mq.hdr import LatencyHistogram

if TYPE_CHECKING:
    from peregrine.mq.worker import Worker

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.+-]+)?$")

#: The worker handling the current message (several may run one service in a process).
current_worker: contextvars.ContextVar[Worker] = contextvars.ContextVar("mq_worker")
#: The events the current request has queued (sent after its reply, if it succeeds).
request_events: contextvars.ContextVar[list[tuple[str, bytes]]] = \
    contextvars.ContextVar("mq_events")

Handler = Callable[[memoryview], bytes] | Callable[[memoryview], Awaitable[bytes]]


class ServiceError(Exception):
    """Answer the request with a service error (its code and message in headers)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class Endpoint:
    """A handler bound to a subject in a queue group (the declaration; each worker
    keeps its own ``EndpointStats``)."""

    def __init__(self, name: str, subject: str, handler: Handler, queue_group: str,
                 metadata: dict[str, str] | None = None,
                 when: Callable[[], bool] | None = None) -> None:
        self.name, self.subject, self.handler = name, subject, handler
        self.queue_group = queue_group
        self.metadata = metadata or {}
        self.is_async = inspect.iscoroutinefunction(handler)
        #: Whether a worker serves it (checked at start: e.g. from the environment).
        self.when = when


class EndpointStats:
    """What one worker saw of one endpoint: counts and an HDR latency histogram."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.latency = LatencyHistogram()
        self.requests = self.errors = 0
        self.processing_ns = 0
        self.last_error = ""

    def record(self, elapsed_ns: int, error: dict[str, str] | None) -> None:
        self.requests += 1
        self.processing_ns += elapsed_ns
        self.latency.record(elapsed_ns / 1000)
        if error is not None:
            self.errors += 1
            self.last_error = f"{error['Nats-Service-Error-Code']}:{error['Nats-Service-Error']}"

    def document(self) -> dict[str, Any]:
        """The services protocol's endpoint stats (times in nanoseconds), with the HDR
        latency summary as ``data``."""
        e = self.endpoint
        return {"name": e.name, "subject": e.subject, "queue_group": e.queue_group,
                "num_requests": self.requests, "num_errors": self.errors,
                "last_error": self.last_error, "processing_time": self.processing_ns,
                "average_processing_time": self.processing_ns // max(1, self.requests),
                "data": {"latency": self.latency.summary()}}


class Service:
    def __init__(self, name: str, version: str = "0.1.0", description: str = "",
                 metadata: dict[str, str] | None = None) -> None:
        if not _NAME.match(name):
            raise InvalidInputError(f"service name {name!r}: letters, digits, _ and -")
        if not _VERSION.match(version):
            raise InvalidInputError(f"service version {version!r} is not semantic (x.y.z)")
        self.name, self.version, self.description = name, version, description
        self.metadata = metadata or {}
        self.endpoints: list[Endpoint] = []
        self.breakers: dict[str, CircuitBreaker] = {}
        self.streams: dict[str, list[str]] = {}
        self.on_start: list[Callable[[Worker], Awaitable[None]]] = []
        self.on_stop: list[Callable[[Worker], Awaitable[None]]] = []
        self.worker: Worker | None = None

    def endpoint(self, subject: str, *, name: str | None = None,
                 queue_group: str | None = None, metadata: dict[str, str] | None = None,
                 when: Callable[[], bool] | None = None) -> Callable[[Handler], Handler]:
        """Bind the decorated handler to ``subject`` in ``queue_group`` (default: the
        service's name); ``when()`` false at start leaves it to other workers."""
        def bind(handler: Handler) -> Handler:
            self.add_endpoint(subject, handler, name=name, queue_group=queue_group,
                              metadata=metadata, when=when)
            return handler

        return bind

    def add_endpoint(self, subject: str, handler: Handler, *, name: str | None = None,
                     queue_group: str | None = None, metadata: dict[str, str] | None = None,
                     when: Callable[[], bool] | None = None) -> Endpoint:
        ep_name = name or str(getattr(handler, "__name__", subject))
        if any(e.name == ep_name for e in self.endpoints):
            raise InvalidInputError(f"endpoint {ep_name!r} is declared twice")
        ep = Endpoint(ep_name, subject, handler, queue_group or self.name, metadata, when)
        self.endpoints.append(ep)
        return ep

    def stream(self, name: str, subjects: list[str]) -> None:
        """A JetStream stream the service publishes events to (made if missing)."""
        self.streams[name] = subjects

    def breaker(self, name: str, failure_threshold: int = 5, reset_s: float = 5.0
                ) -> CircuitBreaker:
        """A circuit breaker for a downstream; its state becomes a metric."""
        if name not in self.breakers:
            self.breakers[name] = CircuitBreaker(name, failure_threshold, reset_s)
        return self.breakers[name]

    def started(self, hook: Callable[[Worker], Awaitable[None]]
                ) -> Callable[[Worker], Awaitable[None]]:
        """Run ``hook(worker)`` once connected (e.g. start a projection)."""
        self.on_start.append(hook)
        return hook

    def stopping(self, hook: Callable[[Worker], Awaitable[None]]
                 ) -> Callable[[Worker], Awaitable[None]]:
        self.on_stop.append(hook)
        return hook

    def bind(self, worker: Worker) -> None:
        self.worker = worker

    def publish_event(self, subject: str, data: bytes) -> None:
        """Queue an event of the request being handled: published to JetStream after
        its reply (only if it succeeds), sent again until acknowledged; never delays
        the reply. Refused with a 503 service error while the stream is not
        acknowledging and the backlog is full."""
        worker = current_worker.get(None) or self.worker
        if worker is None:
            raise RuntimeError("the service is not running")
        worker.publish_event(subject, data)
