"""Metrics, structured logs, request ids and (optional) OpenTelemetry traces.

Metrics use a registry per app (tests run several servers in one process).
Collection gauges are read from the engine at scrape time rather than kept up
to date on every write, so the write path pays nothing for them.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from peregrine.vector.service import VectorService

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# 50 µs .. 10 s: the interesting part of a low-latency server is below 1 ms.
LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005,
                   0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class EngineCollector(Collector):
    """Per-collection and cache gauges, computed when Prometheus scrapes."""

    def __init__(self, service: VectorService) -> None:
        self.service = service

    def collect(self) -> Iterator[Any]:
        labels = ["collection"]
        points = GaugeMetricFamily("peregrine_collection_points", "Points stored", labels=labels)
        segments = GaugeMetricFamily("peregrine_collection_segments", "Segments", labels=labels)
        backlog = GaugeMetricFamily("peregrine_collection_index_backlog_segments",
                                    "Sealed segments waiting for their HNSW build",
                                    labels=labels)
        unindexed = GaugeMetricFamily("peregrine_collection_unindexed_points",
                                      "Points not yet in an HNSW index", labels=labels)
        wal = GaugeMetricFamily("peregrine_collection_wal_bytes", "WAL size on disk",
                                labels=labels)
        for name in self.service.list_collections():
            try:
                info = self.service.collection(name).info()
            except Exception:  # dropped between list and info
                continue
            points.add_metric([name], info["points"])
            segments.add_metric([name], info["segments"])
            backlog.add_metric([name], info["index_backlog_segments"])
            unindexed.add_metric([name], info["unindexed_rows"])
            wal.add_metric([name], info["wal_bytes"])
        yield from (points, segments, backlog, unindexed, wal)
        stats = self.service.cache_stats()
        yield CounterMetricFamily("peregrine_result_cache_hits", "Result cache hits",
                                  value=stats.hits)
        yield CounterMetricFamily("peregrine_result_cache_misses", "Result cache misses",
                                  value=stats.misses)
        yield GaugeMetricFamily("peregrine_result_cache_hit_ratio",
                                "Hits / lookups since start", value=stats.hit_ratio)
        yield GaugeMetricFamily("peregrine_result_cache_entries", "Cached results",
                                value=stats.entries)
        yield GaugeMetricFamily("peregrine_result_cache_bytes", "Bytes held by the cache",
                                value=stats.bytes)


class Metrics:
    def __init__(self, service: VectorService) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # includes resident memory
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(EngineCollector(service))
        self.requests = Counter("peregrine_http_requests", "HTTP requests",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("peregrine_http_request_duration_seconds",
                                 "HTTP request latency (receive to last byte)",
                                 ["method", "route", "status"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.search = Histogram("peregrine_search_duration_seconds",
                                "Engine time of search-like requests (cache hits excluded)",
                                ["collection", "operation"], buckets=LATENCY_BUCKETS,
                                registry=self.registry)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._search_children: dict[tuple[str, str], Any] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:  # labels() costs a lock and a dict walk: memoise it
            children = (self.requests.labels(method, route, str(status)),
                        self.latency.labels(method, route, str(status)))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def forget_collection(self, collection: str) -> None:
        """Drop a deleted collection's search histograms (a new one starts from zero)."""
        for key in [k for k in self._search_children if k[0] == collection]:
            del self._search_children[key]
            self.search.remove(*key)

    def observe_search(self, collection: str, operation: str, seconds: float) -> None:
        key = (collection, operation)
        child = self._search_children.get(key)
        if child is None:
            child = self._search_children[key] = self.search.labels(collection, operation)
        child.observe(seconds)


# -- logs ---------------------------------------------------------------------------
class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the request id of the request being served."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # we write our own access line


# -- traces ---------------------------------------------------------------------------
class Tracing:
    """OpenTelemetry spans, configured entirely by the standard OTEL_* variables."""

    def __init__(self, tracer: Any, propagator: Any) -> None:
        self.tracer = tracer
        self.propagator = propagator

    @classmethod
    def from_env(cls, enabled: bool) -> Tracing | None:
        exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "")
        if not enabled and exporter_name in ("", "none"):
            return None
        try:
            from opentelemetry import propagate, trace
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import (
                BatchSpanProcessor,
                ConsoleSpanExporter,
                SimpleSpanProcessor,
            )
        except ImportError:
            logging.getLogger(__name__).warning(
                "tracing requested but opentelemetry-sdk is not installed "
                "(pip install 'peregrine[otel]'); continuing without traces")
            return None
        service = os.environ.get("OTEL_SERVICE_NAME", "peregrine")
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        for name in (exporter_name or "otlp").split(","):
            name = name.strip()
            if name == "console":
                provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(
                    out=sys.stdout, formatter=lambda s: s.to_json(indent=None) + "\n")))
            elif name == "otlp":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
                provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            elif name != "none":
                raise ValueError(f"unsupported OTEL_TRACES_EXPORTER {name!r}")
        trace.set_tracer_provider(provider)
        return cls(trace.get_tracer("peregrine"), propagate.get_global_textmap())

    def shutdown(self) -> None:
        from opentelemetry import trace

        provider = trace.get_tracer_provider()
        shutdown = getattr(provider, "shutdown", None)
        if shutdown is not None:
            shutdown()
