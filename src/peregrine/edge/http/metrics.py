"""Request counters and latency of the HTTP edge, for every protocol alike."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from peregrine.core.metrics import LATENCY_BUCKETS


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter("peregrine_http_requests", "HTTP requests",
                                ["method", "route", "status"], registry=registry)
        self.latency = Histogram("peregrine_http_request_duration_seconds",
                                 "HTTP request latency (receive to last byte)",
                                 ["method", "route", "status"], buckets=LATENCY_BUCKETS,
                                 registry=registry)
        self.connections = Gauge("peregrine_http_connections", "Open HTTP connections",
                                 registry=registry)
        self.refused = Counter("peregrine_http_connections_refused",
                               "Connections closed at once: the connection limit was reached",
                               registry=registry)
        self.timeouts = Counter("peregrine_http_connection_timeouts",
                                "Connections closed for sending headers or a body too slowly",
                                ["phase"], registry=registry)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:  # labels() costs a lock and a dict walk: memoise it
            children = (self.requests.labels(method, route, str(status)),
                        self.latency.labels(method, route, str(status)))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
