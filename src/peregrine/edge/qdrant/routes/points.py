"""Point writes, retrieval, scroll and count."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peregrine.core.errors import InvalidInputError, NotFoundError
from peregrine.edge.http.protocol import Access, Call, Operation
from peregrine.edge.qdrant import convert, schemas
from peregrine.edge.qdrant.routes.common import cached_read, collection_name
from peregrine.edge.qdrant.vectors import UpsertSlices
from peregrine.vector.service import (
    ClearPayload,
    DeletePayload,
    DeletePoints,
    DeleteVectors,
    PointSelector,
    Record,
    SetPayload,
    UpdateVectors,
    UpsertPoints,
    WriteOperation,
)

if TYPE_CHECKING:
    from peregrine.edge.qdrant.protocol import QdrantProtocol

P = "/collections/{collection_name}/points"
W = Access.WRITE


def parse_point_id(text: str) -> int | str:
    """A path's point id: ASCII digits are an integer, anything else must be a UUID
    (``isdigit`` alone would take '²' or a full-width '１' for a number)."""
    return int(text) if text.isascii() and text.isdigit() else text


def _upsert_parts(body: schemas.PointsList | schemas.PointsBatch
                  ) -> tuple[list[Any], Any, list[Any] | None, bool]:
    """(ids, vectors, payloads, whether the vectors are per point {name: vector})."""
    if isinstance(body, schemas.PointsList):
        rows: Any = [p.vector for p in body.points]
        return ([p.id for p in body.points], rows, [p.payload for p in body.points],
                any(isinstance(r, dict) for r in rows))
    ids, payloads = body.batch.ids, body.batch.payloads
    if payloads is not None and len(payloads) != len(ids):
        raise InvalidInputError(f"batch has {len(ids)} ids but {len(payloads)} payloads")
    if isinstance(body.batch.vectors, dict):
        return ids, convert.named_batch(body.batch.vectors, len(ids)), payloads, True
    return ids, convert.batch_vectors(body.batch.vectors, len(ids)), payloads, False


def _selector(body: schemas.PointsSelector | schemas.SetPayload | schemas.DeletePayload
              | schemas.DeleteVectors) -> PointSelector:
    return PointSelector(body.points, body.filter)


def _operation(op: Any) -> WriteOperation:
    """One operation of a ``points/batch`` body as the face's typed write."""
    if isinstance(op, schemas.UpsertOperation):
        ids, rows, payloads, _ = _upsert_parts(op.upsert)
        return UpsertPoints(ids, rows, payloads, op.upsert.update_filter,
                            op.upsert.update_mode or "upsert")
    if isinstance(op, schemas.DeleteOperation):
        return DeletePoints(_selector(op.delete))
    if isinstance(op, (schemas.SetPayloadOperation, schemas.OverwritePayloadOperation)):
        given = op.set_payload if isinstance(op, schemas.SetPayloadOperation) \
            else op.overwrite_payload
        if given.key is not None:
            raise InvalidInputError("setting a payload at a nested 'key' is not supported")
        return SetPayload(_selector(given), given.payload,
                          isinstance(op, schemas.OverwritePayloadOperation))
    if isinstance(op, schemas.DeletePayloadOperation):
        return DeletePayload(_selector(op.delete_payload), op.delete_payload.keys)
    if isinstance(op, schemas.ClearPayloadOperation):
        return ClearPayload(_selector(op.clear_payload))
    if isinstance(op, schemas.UpdateVectorsOperation):
        points = op.update_vectors.points
        return UpdateVectors([p.id for p in points], [p.vector for p in points])
    return DeleteVectors(_selector(op.delete_vectors), op.delete_vectors.vector)


def operations(protocol: QdrantProtocol) -> list[Operation]:
    vector = protocol.vector

    async def upsert_points(call: Call) -> Any:
        body: schemas.PointsList | schemas.PointsBatch = call.body
        ids, rows, payloads, named = _upsert_parts(body)
        when = (body.update_filter, body.update_mode or "upsert")
        if named:  # per-point {name: vector}: the face splits them by the collection's
            seq = await call.run(vector.upsert_points, collection_name(call), ids, rows,
                                 payloads, call.params.version_key, *when)
        else:
            seq = await call.run(vector.upsert, collection_name(call), ids, rows, payloads,
                                 call.params.version_key, None, *when)
        return convert.update_result(call.params.wait, seq)

    async def batch_update(call: Call) -> Any:
        body: schemas.UpdateOperations = call.body
        seq = await call.run(vector.batch_update, collection_name(call),
                             [_operation(op) for op in body.operations])
        # Qdrant answers one result per operation; here they share the batch's record.
        return [convert.update_result(call.params.wait, seq)] * len(body.operations)

    async def update_vectors(call: Call) -> Any:
        body: schemas.UpdateVectors = call.body
        await call.run(vector.update_vectors, collection_name(call),
                       [p.id for p in body.points], [p.vector for p in body.points])
        return convert.update_result(call.params.wait)

    async def delete_vectors(call: Call) -> Any:
        body: schemas.DeleteVectors = call.body
        await call.run(vector.delete_vectors, collection_name(call), _selector(body),
                       body.vector)
        return convert.update_result(call.params.wait)

    async def delete_points(call: Call) -> Any:
        await call.run(vector.delete, collection_name(call), _selector(call.body))
        return convert.update_result(call.params.wait)

    async def set_payload(call: Call) -> Any:
        return await _set_payload(call, False)

    async def overwrite_payload(call: Call) -> Any:
        return await _set_payload(call, True)

    async def _set_payload(call: Call, overwrite: bool) -> Any:
        body: schemas.SetPayload = call.body
        if body.key is not None:
            raise InvalidInputError("setting a payload at a nested 'key' is not supported")
        await call.run(vector.set_payload, collection_name(call), _selector(body), body.payload,
                       overwrite)
        return convert.update_result(call.params.wait)

    async def delete_payload(call: Call) -> Any:
        body: schemas.DeletePayload = call.body
        await call.run(vector.delete_payload, collection_name(call), _selector(body), body.keys)
        return convert.update_result(call.params.wait)

    async def clear_payload(call: Call) -> Any:
        await call.run(vector.clear_payload, collection_name(call), _selector(call.body))
        return convert.update_result(call.params.wait)

    async def retrieve_points(call: Call) -> Any:
        body: schemas.PointRequest = call.body
        payload = convert.with_payload(body.with_payload, True)
        with_vector = convert.with_vector(body.with_vector)
        name = collection_name(call)
        return await cached_read(call, vector, lambda: [
            convert.record(r) for r in vector.retrieve(name, body.ids, payload, with_vector)])

    async def get_point(call: Call) -> Any:
        point_id = parse_point_id(call.path["id"])
        name = collection_name(call)

        def read() -> dict[str, Any]:
            found = vector.retrieve(name, [point_id], True, True)
            if not found:
                raise NotFoundError(f"No point with id {point_id} found")
            return convert.record(found[0])

        return await cached_read(call, vector, read)

    def ordered(name: str, body: schemas.ScrollRequest) -> list[Record]:
        order = body.order_by
        if isinstance(order, str):
            order = schemas.OrderBy(key=order)
        assert order is not None
        if body.offset is not None:
            raise InvalidInputError("offset cannot be used with order_by: the next page "
                                    "starts from the last order_value (start_from)")
        if isinstance(order.start_from, str):
            raise InvalidInputError("order_by.start_from: datetime values are not supported "
                                    "yet; give a number")
        return vector.scroll_ordered(
            name, order.key, order.direction == "desc", order.start_from,
            body.filter, body.limit or 10, convert.with_payload(body.with_payload, True),
            convert.with_vector(body.with_vector))

    async def scroll_points(call: Call) -> Any:
        body: schemas.ScrollRequest = call.body or schemas.ScrollRequest()
        payload = convert.with_payload(body.with_payload, True)
        with_vector = convert.with_vector(body.with_vector)
        name = collection_name(call)

        def read() -> dict[str, Any]:
            if body.order_by is not None:
                return {"points": [convert.record(r) for r in ordered(name, body)],
                        "next_page_offset": None}
            records, next_id = vector.scroll(name, body.filter, body.limit or 10, body.offset,
                                             payload, with_vector)
            return {"points": [convert.record(r) for r in records],
                    "next_page_offset": next_id}

        return await cached_read(call, vector, read)

    async def count_points(call: Call) -> Any:
        body: schemas.CountRequest = call.body or schemas.CountRequest()
        name = collection_name(call)
        return await cached_read(call, vector, lambda: {"count": vector.count(name, body.filter)})

    async def facet(call: Call) -> Any:
        body: schemas.FacetRequest = call.body
        name = collection_name(call)
        return await cached_read(call, vector, lambda: {"hits": [
            {"value": value, "count": n}
            for value, n in vector.facet(name, body.key, body.filter, body.limit)]})

    return [
        Operation("POST", "/collections/{collection_name}/facet", "facet", "points",
                  "Counts of the values of an indexed payload field", facet,
                  body=schemas.FacetRequest, params=schemas.ReadParams, inline=True),
        Operation("PUT", P, "upsert_points", "points", "Insert or replace points",
                  upsert_points, W, schemas.UpsertBody,
                  schemas.UpsertParams, bulk=True, body_slices=UpsertSlices()),
        Operation("POST", P + "/batch", "batch_update", "points",
                  "Several write operations, applied in order and atomically", batch_update, W,
                  schemas.UpdateOperations, schemas.WriteParams, bulk=True),
        Operation("PUT", P + "/vectors", "update_vectors", "points",
                  "Replace named or sparse vectors of points", update_vectors, W,
                  schemas.UpdateVectors, schemas.WriteParams, bulk=True),
        Operation("POST", P + "/vectors/delete", "delete_vectors", "points",
                  "Remove named or sparse vectors from points", delete_vectors, W,
                  schemas.DeleteVectors, schemas.WriteParams),
        Operation("POST", P + "/delete", "delete_points", "points",
                  "Delete points by ids or filter", delete_points, W, schemas.PointsSelector,
                  schemas.WriteParams),
        Operation("POST", P, "get_points", "points", "Retrieve points by ids", retrieve_points,
                  body=schemas.PointRequest, params=schemas.ReadParams, inline=True),
        Operation("GET", P + "/{id}", "get_point", "points", "Retrieve one point", get_point,
                  params=schemas.ReadParams, inline=True),
        Operation("POST", P + "/payload", "set_payload", "points", "Merge keys into payloads",
                  set_payload, W, schemas.SetPayload, schemas.WriteParams, bulk=True),
        Operation("PUT", P + "/payload", "overwrite_payload", "points", "Replace payloads",
                  overwrite_payload, W, schemas.SetPayload, schemas.WriteParams, bulk=True),
        Operation("POST", P + "/payload/delete", "delete_payload", "points",
                  "Delete payload keys", delete_payload, W, schemas.DeletePayload,
                  schemas.WriteParams),
        Operation("POST", P + "/payload/clear", "clear_payload", "points",
                  "Remove whole payloads", clear_payload, W, schemas.PointsSelector,
                  schemas.WriteParams),
        Operation("POST", P + "/scroll", "scroll_points", "points",
                  "Page through points in id order", scroll_points, body=schemas.ScrollRequest,
                  params=schemas.ReadParams, body_required=False, inline=True),
        Operation("POST", P + "/count", "count_points", "points",
                  "Count points matching a filter", count_points, body=schemas.CountRequest,
                  params=schemas.ReadParams, body_required=False, inline=True),
    ]
