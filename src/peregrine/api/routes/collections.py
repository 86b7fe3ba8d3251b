"""Collections and payload indexes."""

from __future__ import annotations

from typing import Any

from peregrine.api import convert, schemas
from peregrine.api.operation import Access, Call, Operation
from peregrine.vector.collection.collection import Collection


def _name(call: Call) -> str:
    return call.path["collection_name"]


async def list_collections(call: Call) -> Any:
    names = await call.run(call.ctx.service.list_collections)
    return {"collections": [{"name": n} for n in names]}


async def get_collection(call: Call) -> Any:
    info = await call.run(call.ctx.service.collection_info, _name(call))
    return convert.collection_info(info)


async def create_collection(call: Call) -> Any:
    body: schemas.CreateCollection = call.body
    index = convert.index_config(body)
    metric = convert.DISTANCE_TO_METRIC[body.vector_params.distance]
    await call.run(call.ctx.service.create_collection, _name(call), body.vector_params.size, metric,
                   index)
    return True


async def delete_collection(call: Call) -> Any:
    dropped = await call.run(call.ctx.service.drop_collection, _name(call))
    call.ctx.metrics.forget_collection(_name(call))
    return dropped


async def collection_exists(call: Call) -> Any:
    return {"exists": call.ctx.service.has_collection(_name(call))}


async def create_field_index(call: Call) -> Any:
    body: schemas.CreateFieldIndex = call.body
    kind = convert.field_schema(body.field_schema)

    def change(c: Collection) -> None:
        c.create_payload_index(body.field_name, kind)

    await call.run(call.ctx.service.write, _name(call), change)
    return convert.update_result(call.params.wait)


async def delete_field_index(call: Call) -> Any:
    field = call.path["field_name"]
    await call.run(call.ctx.service.write, _name(call), lambda c: c.delete_payload_index(field))
    return convert.update_result(call.params.wait)


C = "/collections/{collection_name}"
OPERATIONS = [
    Operation("GET", "/collections", "get_collections", "collections", "List collections",
              list_collections),
    Operation("GET", C, "get_collection", "collections",
              "Collection info: status, points, segments, config", get_collection),
    Operation("PUT", C, "create_collection", "collections", "Create a collection",
              create_collection, Access.WRITE, schemas.CreateCollection,
              schemas.TimeoutParams),
    Operation("DELETE", C, "delete_collection", "collections", "Delete a collection",
              delete_collection, Access.WRITE, params=schemas.TimeoutParams),
    Operation("GET", C + "/exists", "collection_exists", "collections",
              "Whether a collection exists", collection_exists),
    Operation("PUT", C + "/index", "create_field_index", "indexes", "Create a payload index",
              create_field_index, Access.WRITE, schemas.CreateFieldIndex, schemas.WriteParams),
    Operation("DELETE", C + "/index/{field_name}", "delete_field_index", "indexes",
              "Delete a payload index", delete_field_index, Access.WRITE,
              params=schemas.WriteParams),
]
