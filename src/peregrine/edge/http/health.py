"""The edge's own routes, whatever protocols are mounted: probes and metrics."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import PlainTextResponse, Response

from peregrine.edge.http.protocol import Access, Call, Operation

_TEXT = {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}}


async def healthz(call: Call) -> Any:
    return PlainTextResponse("healthz check passed")


async def readyz(call: Call) -> Any:
    if call.edge.ready:
        return PlainTextResponse("all shards are ready")
    return PlainTextResponse("not ready", status_code=503)


async def metrics(call: Call) -> Any:
    text = await call.run(generate_latest, call.edge.metrics.registry)
    return Response(text, media_type=CONTENT_TYPE_LATEST)


def health_operations() -> list[Operation]:
    return [
        Operation("GET", "/healthz", "healthz", "service", "Liveness probe", healthz,
                  Access.PUBLIC, responses=_TEXT),
        Operation("GET", "/livez", "livez", "service", "Liveness probe", healthz,
                  Access.PUBLIC, responses=_TEXT),
        Operation("GET", "/readyz", "readyz", "service", "Readiness probe (503 while stopping)",
                  readyz, Access.PUBLIC, responses=_TEXT),
        Operation("GET", "/metrics", "metrics", "service", "Prometheus metrics", metrics,
                  responses=_TEXT),
    ]
