"""Qdrant's root document and this protocol's OpenAPI document."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

import peregrine
from peregrine.edge.http.protocol import Access, Call, Operation

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

    async def openapi(call: Call) -> Any:
        return Response(protocol.openapi, media_type="application/json")

    return [
        Operation("GET", "/", "root", "service", "Server title and version", root,
                  Access.PUBLIC, responses={"200": {"description": "version info",
                                                    "content": _JSON_OBJECT}}),
        Operation("GET", "/openapi.json", "openapi", "service", "This API's OpenAPI document",
                  openapi, Access.PUBLIC, responses={"200": {"description": "OpenAPI 3.1",
                                                             "content": _JSON_OBJECT}}),
    ]
