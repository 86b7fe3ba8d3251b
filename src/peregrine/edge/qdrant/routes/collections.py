"""Collections and payload indexes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peregrine.core.errors import InvalidInputError
from peregrine.edge.http.protocol import Access, Call, Operation
from peregrine.edge.qdrant import convert, schemas
from peregrine.edge.qdrant.layout import layout
from peregrine.edge.qdrant.routes.common import collection_name

if TYPE_CHECKING:
    from peregrine.edge.qdrant.protocol import QdrantProtocol

C = "/collections/{collection_name}"


def operations(protocol: QdrantProtocol) -> list[Operation]:
    vector = protocol.vector

    async def list_collections(call: Call) -> Any:
        names = await call.run(vector.list_collections)
        return {"collections": [{"name": n} for n in names]}

    async def get_collection(call: Call) -> Any:
        info = await call.run(vector.collection_info, collection_name(call))
        return convert.collection_info(info)

    async def create_collection(call: Call) -> Any:
        body: schemas.CreateCollection = call.body
        shape = layout(body)
        await call.run(lambda: vector.create_collection(
            collection_name(call), shape.dim, shape.metric, convert.index_config(body),
            {convert.PROTOCOL: convert.declared(body)}, vector_name=shape.vector_name,
            dense=shape.dense, named=shape.named, sparse=shape.sparse))
        return True

    async def update_collection(call: Call) -> Any:
        body: schemas.UpdateCollection = call.body or schemas.UpdateCollection()
        name = collection_name(call)

        def update() -> None:
            config = vector.collection_info(name).config
            for vector_name in body.vectors or {}:
                if config.vector_kind(vector_name) == "sparse":
                    raise InvalidInputError(f"{vector_name!r} is a sparse vector: change it "
                                            "under sparse_vectors")
            for vector_name, params in (body.sparse_vectors or {}).items():
                if config.vector_kind(vector_name) != "sparse":
                    raise InvalidInputError(f"{vector_name!r} is not a sparse vector")
                if params.modifier is not None and \
                        params.modifier != config.sparse[vector_name].value:
                    raise InvalidInputError(f"the modifier of {vector_name!r} is fixed at "
                                            "creation")
            vector.update_collection(name, convert.index_update(body, config.dim,
                                                                config.vector_name),
                                     None, convert.named_updates(body, config))
            # The declared settings merge under the collection's write lock, so a
            # concurrent index creation's parameters are not lost.
            vector.change_declared(name, convert.PROTOCOL,
                                   lambda given: convert.declared_update(body, given))

        await call.run(update)
        return True

    async def delete_collection(call: Call) -> Any:
        return await call.run(vector.drop_collection, collection_name(call))

    async def collection_exists(call: Call) -> Any:
        return {"exists": vector.collection_exists(collection_name(call))}

    def keep_hints(name: str, field: str, hints: dict[str, bool] | None) -> None:
        """Record (or forget) a field index's Qdrant parameters in the collection's
        declared settings, where collection info reads them back."""
        def change(given: dict[str, Any]) -> dict[str, Any]:
            kept = {f: h for f, h in given.get(convert.HINTS_KEY, {}).items() if f != field}
            if hints:
                kept[field] = hints
            return {**given, convert.HINTS_KEY: kept}

        vector.change_declared(name, convert.PROTOCOL, change)

    async def create_field_index(call: Call) -> Any:
        body: schemas.CreateFieldIndex = call.body
        kind = convert.field_schema(body.field_schema)
        params = body.field_schema if kind == "text" and isinstance(body.field_schema, dict) \
            else None
        hints = convert.index_hints(kind, body.field_schema)
        name = collection_name(call)

        def create() -> None:
            vector.create_payload_index(name, body.field_name, kind, params,
                                        convert.index_layout(hints))
            keep_hints(name, body.field_name, hints)

        await call.run(create)
        return convert.update_result(call.params.wait)

    async def delete_field_index(call: Call) -> Any:
        name, field = collection_name(call), call.path["field_name"]

        def delete() -> None:
            vector.delete_payload_index(name, field)
            keep_hints(name, field, None)

        await call.run(delete)
        return convert.update_result(call.params.wait)

    return [
        Operation("GET", "/collections", "get_collections", "collections", "List collections",
                  list_collections),
        Operation("GET", C, "get_collection", "collections",
                  "Collection info: status, points, segments, config", get_collection),
        Operation("PUT", C, "create_collection", "collections", "Create a collection",
                  create_collection, Access.WRITE, schemas.CreateCollection,
                  schemas.TimeoutParams),
        Operation("PATCH", C, "update_collection", "collections",
                  "Change HNSW, quantization and optimizer settings and metadata",
                  update_collection, Access.WRITE, schemas.UpdateCollection,
                  schemas.TimeoutParams, body_required=False),
        Operation("DELETE", C, "delete_collection", "collections", "Delete a collection",
                  delete_collection, Access.WRITE, params=schemas.TimeoutParams),
        Operation("GET", C + "/exists", "collection_exists", "collections",
                  "Whether a collection (or an alias of one) exists", collection_exists),
        Operation("PUT", C + "/index", "create_field_index", "indexes", "Create a payload index",
                  create_field_index, Access.WRITE, schemas.CreateFieldIndex,
                  schemas.WriteParams),
        Operation("DELETE", C + "/index/{field_name}", "delete_field_index", "indexes",
                  "Delete a payload index", delete_field_index, Access.WRITE,
                  params=schemas.WriteParams),
    ]
