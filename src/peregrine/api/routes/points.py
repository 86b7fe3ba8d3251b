"""Point writes, retrieval, scroll and count."""

from __future__ import annotations

from typing import Any

import numpy as np

from peregrine.api import convert, schemas
from peregrine.api.errors import ApiError
from peregrine.api.operation import Access, Call, Operation
from peregrine.core.errors import DimensionMismatchError, InvalidInputError, NotFoundError
from peregrine.vector.collection.collection import Collection
from peregrine.vector.ids import PointId


def _name(call: Call) -> str:
    return call.path["collection_name"]


def check_batch(call: Call, n: int, what: str) -> None:
    limit = call.ctx.config.max_batch
    if n > limit:
        raise ApiError(400, f"Bad request: {n} {what} in one request, the limit (max_batch) "
                            f"is {limit}")


def check_limit(call: Call, limit: int | None, offset: int | None = None) -> None:
    cap = call.ctx.config.max_limit
    if (limit or 0) + (offset or 0) > cap:
        raise ApiError(400, f"Bad request: limit + offset must be at most {cap} (max_limit)")


def stack_vectors(vectors: list[np.ndarray] | np.ndarray, dim: int) -> np.ndarray:
    if isinstance(vectors, np.ndarray):
        if vectors.ndim == 1:  # binary batch: one blob of n * dim float32
            if vectors.size % dim:
                raise DimensionMismatchError(
                    f"binary vectors hold {vectors.size} floats, not a multiple of the "
                    f"collection's dimension {dim}")
            return vectors.reshape(-1, dim)
        if vectors.size == 0:
            return vectors.reshape(0, dim)
        return vectors
    for i, v in enumerate(vectors):
        if v.shape[0] != dim:
            raise DimensionMismatchError(
                f"point #{i}: vector has dimension {v.shape[0]}, the collection expects {dim}")
    return np.stack(vectors) if vectors else np.empty((0, dim), dtype=np.float32)


def parse_point_id(text: str) -> PointId:
    return int(text) if text.isdigit() else text


async def upsert_points(call: Call) -> Any:
    body: schemas.PointsList | schemas.PointsBatch = call.body
    if isinstance(body, schemas.PointsList):
        ids: list[PointId] = [p.id for p in body.points]
        raw: list[np.ndarray] | np.ndarray = [p.vector for p in body.points]
        payloads: list[Any] | None = [p.payload for p in body.points]
    else:
        ids, raw, payloads = body.batch.ids, body.batch.vectors, body.batch.payloads
        if payloads is not None and len(payloads) != len(ids):
            raise InvalidInputError(f"batch has {len(ids)} ids but {len(payloads)} payloads")
    check_batch(call, len(ids), "points")

    def change(c: Collection) -> int:
        vectors = stack_vectors(raw, c.config.dim)
        if vectors.shape[0] != len(ids):
            raise InvalidInputError(f"batch has {len(ids)} ids but {vectors.shape[0]} vectors")
        return c.upsert(ids, vectors, payloads)

    seq = await call.run(call.ctx.service.write, _name(call), change)
    return convert.update_result(call.params.wait, seq)


async def delete_points(call: Call) -> Any:
    body: schemas.PointsSelector = call.body
    if body.points is not None:
        check_batch(call, len(body.points), "point ids")
    if (body.points is None) == (body.filter is None):
        raise InvalidInputError("delete needs exactly one of 'points' or 'filter'")
    await call.run(call.ctx.service.write, _name(call),
                   lambda c: c.delete(ids=body.points, filter=body.filter))
    return convert.update_result(call.params.wait)


async def retrieve_points(call: Call) -> Any:
    body: schemas.PointRequest = call.body
    check_batch(call, len(body.ids), "point ids")
    payload = convert.with_payload(body.with_payload, True)
    vector = convert.with_vector(body.with_vector)

    def read(c: Collection) -> list[dict[str, Any]]:
        return [convert.record(r) for r in c.retrieve(body.ids, payload, vector)]

    return await call.cached(_name(call), read)


async def get_point(call: Call) -> Any:
    point_id = parse_point_id(call.path["id"])

    def read(c: Collection) -> dict[str, Any]:
        found = c.retrieve([point_id], True, True)
        if not found:
            raise NotFoundError(f"No point with id {point_id} found")
        return convert.record(found[0])

    return await call.cached(_name(call), read)


def _payload_write(call: Call, overwrite: bool) -> Any:
    body: schemas.SetPayload = call.body
    service = call.ctx.service
    if body.key is not None:
        raise InvalidInputError("setting a payload at a nested 'key' is not supported")
    if body.points is not None:
        check_batch(call, len(body.points), "point ids")

    def change(c: Collection) -> None:
        c.set_payload(service.select_ids(c, body.points, body.filter), body.payload, overwrite)

    return change


async def set_payload(call: Call) -> Any:
    await call.run(call.ctx.service.write, _name(call), _payload_write(call, False))
    return convert.update_result(call.params.wait)


async def overwrite_payload(call: Call) -> Any:
    await call.run(call.ctx.service.write, _name(call), _payload_write(call, True))
    return convert.update_result(call.params.wait)


async def delete_payload(call: Call) -> Any:
    body: schemas.DeletePayload = call.body
    service = call.ctx.service

    def change(c: Collection) -> None:
        c.delete_payload(service.select_ids(c, body.points, body.filter), body.keys)

    await call.run(call.ctx.service.write, _name(call), change)
    return convert.update_result(call.params.wait)


async def clear_payload(call: Call) -> Any:
    body: schemas.PointsSelector = call.body
    service = call.ctx.service

    def change(c: Collection) -> None:
        c.clear_payload(service.select_ids(c, body.points, body.filter))

    await call.run(call.ctx.service.write, _name(call), change)
    return convert.update_result(call.params.wait)


async def scroll_points(call: Call) -> Any:
    body: schemas.ScrollRequest = call.body or schemas.ScrollRequest()
    limit = body.limit or 10
    check_limit(call, limit)
    payload = convert.with_payload(body.with_payload, True)
    vector = convert.with_vector(body.with_vector)

    def read(c: Collection) -> dict[str, Any]:
        records, next_id = c.scroll(body.filter, limit, body.offset, payload, vector)
        return {"points": [convert.record(r) for r in records], "next_page_offset": next_id}

    return await call.cached(_name(call), read)


async def count_points(call: Call) -> Any:
    body: schemas.CountRequest = call.body or schemas.CountRequest()
    return await call.cached(_name(call), lambda c: {"count": c.count(body.filter)})


P = "/collections/{collection_name}/points"
W = Access.WRITE
OPERATIONS = [
    Operation("PUT", P, "upsert_points", "points", "Insert or replace points", upsert_points,
              W, schemas.PointsList | schemas.PointsBatch, schemas.WriteParams),
    Operation("POST", P + "/delete", "delete_points", "points", "Delete points by ids or filter",
              delete_points, W, schemas.PointsSelector, schemas.WriteParams),
    Operation("POST", P, "get_points", "points", "Retrieve points by ids", retrieve_points,
              body=schemas.PointRequest, params=schemas.ReadParams),
    Operation("GET", P + "/{id}", "get_point", "points", "Retrieve one point", get_point,
              params=schemas.ReadParams),
    Operation("POST", P + "/payload", "set_payload", "points", "Merge keys into payloads",
              set_payload, W, schemas.SetPayload, schemas.WriteParams),
    Operation("PUT", P + "/payload", "overwrite_payload", "points", "Replace payloads",
              overwrite_payload, W, schemas.SetPayload, schemas.WriteParams),
    Operation("POST", P + "/payload/delete", "delete_payload", "points",
              "Delete payload keys", delete_payload, W, schemas.DeletePayload,
              schemas.WriteParams),
    Operation("POST", P + "/payload/clear", "clear_payload", "points", "Remove whole payloads",
              clear_payload, W, schemas.PointsSelector, schemas.WriteParams),
    Operation("POST", P + "/scroll", "scroll_points", "points", "Page through points in id order",
              scroll_points, body=schemas.ScrollRequest, params=schemas.ReadParams,
              body_required=False),
    Operation("POST", P + "/count", "count_points", "points", "Count points matching a filter",
              count_points, body=schemas.CountRequest, params=schemas.ReadParams,
              body_required=False),
]
