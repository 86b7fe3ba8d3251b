"""Qdrant's root document and this protocol's OpenAPI document."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

import peregrine
from peregrine.edge.http.protocol import Access, Call, Operation
from peregrine.edge.qdrant import schemas

if TYPE_CHECKING:
    from peregrine.edge.qdrant.protocol import QdrantProtocol

_JSON_OBJECT = {"application/json": {"schema": {"type": "object"}}}


def operations(protocol: QdrantProtocol) -> list[Operation]:
    async def root(call: Call) -> Any:
        """Qdrant's version object; ``version`` is the Qdrant API level served."""
        return Response(orjson.dumps({
            "title": "peregrine - Qdrant-compatible vector search",
            "version": protocol.settings.version,
            "peregrine_version": peregrine.__version__,
        }), media_type="application/json")

    async def telemetry(call: Call) -> Any:
        """Qdrant's telemetry shape where the concept exists: the app, and per
        collection its points, segments and vectors."""
        infos = await call.run(protocol.vector.collection_infos)
        return {
            "id": protocol.settings.version,
            "app": {"name": "peregrine", "version": peregrine.__version__,
                    "qdrant_api": protocol.settings.version},
            "collections": {"number_of_collections": len(infos), "collections": [{
                "id": info.name, "points": info.points,
                "indexed_vectors": info.indexed_points, "segments": info.segments,
                "status": info.status, "wal_bytes": info.wal_bytes,
                "vectors": ([info.config.vector_name] if info.config.dense else [])
                + list(info.config.named), "sparse_vectors": list(info.config.sparse),
            } for info in infos]},
        }

    async def openapi(call: Call) -> Any:
        return Response(protocol.openapi, media_type="application/json")

    return [
        Operation("GET", "/", "root", "service", "Server title and version", root,
                  Access.PUBLIC, responses={"200": {"description": "version info",
                                                    "content": _JSON_OBJECT}}),
        Operation("GET", "/telemetry", "telemetry", "service",
                  "The app and its collections (Qdrant's telemetry where it applies)",
                  telemetry, params=schemas.TelemetryParams),
        Operation("GET", "/openapi.json", "openapi", "service", "This API's OpenAPI document",
                  openapi, Access.PUBLIC, responses={"200": {"description": "OpenAPI 3.1",
                                                             "content": _JSON_OBJECT}}),
    ]
