"""OpenTelemetry traces of HTTP requests (optional: the ``otel`` extra)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any


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

    def start_span(self, method: str, route: str, operation: str,
                   headers: dict[bytes, bytes]) -> Any:
        """A server span for one request, continuing the caller's trace if it sent one."""
        from opentelemetry.trace import SpanKind

        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()
                   if k in (b"traceparent", b"tracestate")}
        return self.tracer.start_span(
            f"{method} {route}", context=self.propagator.extract(carrier), kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": route,
                        "peregrine.operation": operation})

    @staticmethod
    def end_span(span: Any, status: int) -> None:
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def shutdown(self) -> None:
        from opentelemetry import trace

        provider = trace.get_tracer_provider()
        shutdown = getattr(provider, "shutdown", None)
        if shutdown is not None:
            shutdown()
