"""The OpenAPI 3.1 document, generated from the route table and the models."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

import peregrine
from peregrine.edge.http.protocol import Access, Operation
from peregrine.edge.qdrant.filter_schema import Filter

_REF = "#/components/schemas/{model}"
_PATH_PARAMS: dict[str, dict[str, Any]] = {
    "collection_name": {"type": "string", "minLength": 1},
    "field_name": {"type": "string", "minLength": 1},
    "snapshot_name": {"type": "string", "minLength": 1},
    "id": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]},
}
_ERROR = {
    "type": "object",
    "properties": {
        "status": {"type": "object", "properties": {"error": {"type": "string"}}},
        "time": {"type": "number"},
    },
}


def _no_null(schema: dict[str, Any]) -> dict[str, Any]:
    variants = schema.get("anyOf")
    if variants:
        kept = [v for v in variants if v.get("type") != "null"]
        rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
        return {**rest, **(kept[0] if len(kept) == 1 else {"anyOf": kept})}
    return {k: v for k, v in schema.items() if k != "default"}


def build_openapi(operations: list[Operation]) -> dict[str, Any]:
    inputs: list[tuple[str, Any, TypeAdapter[Any]]] = [
        (op.name, "validation", op.adapter) for op in operations if op.adapter is not None]
    inputs.append(("__filter__", "validation", TypeAdapter(Filter)))
    keys, defs = TypeAdapter.json_schemas(inputs, ref_template=_REF)
    components = dict(defs.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        params: list[dict[str, Any]] = []
        for name in _PATH_PARAMS:
            if "{" + name + "}" in op.path:
                params.append({"name": name, "in": "path", "required": True,
                               "schema": _PATH_PARAMS[name]})
        for name, prop in op.params.model_json_schema().get("properties", {}).items():
            params.append({"name": name, "in": "query", "required": False,
                           "schema": _no_null(prop)})
        item: dict[str, Any] = {"operationId": op.name, "tags": [op.tag],
                                "summary": op.summary, "parameters": params}
        if op.adapter is not None:
            schema = keys[(op.name, "validation")]
            item["requestBody"] = {"required": op.body_required, "content": {
                "application/json": {"schema": schema},
                "application/msgpack": {"schema": schema},
            }}
        item["responses"] = op.responses or {"200": {
            "description": "Qdrant envelope: result, status, time",
            "content": {"application/json": {"schema": {
                "type": "object", "properties": {"result": {}, "status": {"type": "string"},
                                                 "time": {"type": "number"}}}}}}}
        item["responses"]["4XX"] = {"description": "Qdrant error envelope", "content": {
            "application/json": {"schema": _ERROR}}}
        if op.access is not Access.PUBLIC:
            item["security"] = [{"api-key": []}, {"bearer": []}, {}]
        paths.setdefault(op.path, {})[op.method.lower()] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": "Peregrine (Qdrant-compatible REST)", "version": peregrine.__version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "api-key": {"type": "apiKey", "in": "header", "name": "api-key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }
