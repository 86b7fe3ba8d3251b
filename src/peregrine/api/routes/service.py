"""Root, health probes, metrics and the OpenAPI document."""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import PlainTextResponse, Response

import peregrine
from peregrine.api.operation import Access, Call, Operation

_TEXT = {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}}


async def root(call: Call) -> Any:
    """Qdrant's version object; ``version`` is the Qdrant API level served."""
    return Response(orjson.dumps({
        "title": "peregrine - Qdrant-compatible vector search",
        "version": call.ctx.config.qdrant_version,
        "peregrine_version": peregrine.__version__,
    }), media_type="application/json")


async def healthz(call: Call) -> Any:
    return PlainTextResponse("healthz check passed")


async def readyz(call: Call) -> Any:
    if call.ctx.ready:
        return PlainTextResponse("all shards are ready")
    return PlainTextResponse("not ready", status_code=503)


async def metrics(call: Call) -> Any:
    text = await call.run(generate_latest, call.ctx.metrics.registry)
    return Response(text, media_type=CONTENT_TYPE_LATEST)


async def openapi(call: Call) -> Any:
    return Response(call.ctx.openapi, media_type="application/json")


OPERATIONS = [
    Operation("GET", "/", "root", "service", "Server title and version", root, Access.PUBLIC,
              responses={"200": {"description": "version info", "content": {
                  "application/json": {"schema": {"type": "object"}}}}}),
    Operation("GET", "/healthz", "healthz", "service", "Liveness probe", healthz,
              Access.PUBLIC, responses=_TEXT),
    Operation("GET", "/livez", "livez", "service", "Liveness probe", healthz, Access.PUBLIC,
              responses=_TEXT),
    Operation("GET", "/readyz", "readyz", "service", "Readiness probe (503 while stopping)",
              readyz, Access.PUBLIC, responses=_TEXT),
    Operation("GET", "/metrics", "metrics", "service", "Prometheus metrics", metrics,
              responses=_TEXT),
    Operation("GET", "/openapi.json", "openapi", "service", "This API's OpenAPI document",
              openapi, Access.PUBLIC, responses={"200": {"description": "OpenAPI 3.1",
                                                         "content": {"application/json": {
                                                             "schema": {"type": "object"}}}}}),
]
