"""Nearest-neighbour reads: search, batch search, recommend and the query API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from peregrine.api import convert, schemas
from peregrine.api.operation import Call, Operation
from peregrine.api.routes.points import check_batch, check_limit
from peregrine.vector.collection.collection import Collection
from peregrine.vector.ids import PointId
from peregrine.vector.mmr import maximal_marginal_relevance
from peregrine.vector.service import VectorService

Q = "/collections/{collection_name}/points"


def _name(call: Call) -> str:
    return call.path["collection_name"]


def _without(filter: dict[str, Any] | None, ids: Sequence[PointId]) -> dict[str, Any] | None:
    """The request's filter, also excluding the example points themselves."""
    if not ids:
        return filter
    return {"must": [filter] if filter else [], "must_not": [{"has_id": list(ids)}]}


def nearest(c: Collection, vector: np.ndarray, *, filter: dict[str, Any] | None,
            params: schemas.SearchParams | None, limit: int, offset: int | None,
            with_payload: Any, with_vector: Any, score_threshold: float | None,
            default_payload: bool = False) -> list[dict[str, Any]]:
    params = params or schemas.SearchParams()
    hits = c.search(vector, k=limit, filter=filter, ef=params.hnsw_ef,
                    exact=bool(params.exact),
                    with_payload=convert.with_payload(with_payload, default_payload),
                    with_vectors=convert.with_vector(with_vector),
                    score_threshold=score_threshold, offset=offset or 0)
    return [convert.scored_point(h) for h in hits]


def _search(c: Collection, body: schemas.SearchRequest) -> list[dict[str, Any]]:
    return nearest(c, body.vector, filter=body.filter, params=body.params, limit=body.limit,
                   offset=body.offset, with_payload=body.with_payload,
                   with_vector=body.with_vector, score_threshold=body.score_threshold)


async def search_points(call: Call) -> Any:
    body: schemas.SearchRequest = call.body
    check_limit(call, body.limit, body.offset)
    return await call.cached(_name(call), lambda c: _search(c, body))


async def search_batch(call: Call) -> Any:
    body: schemas.SearchRequestBatch = call.body
    check_batch(call, len(body.searches), "searches")
    for s in body.searches:
        check_limit(call, s.limit, s.offset)
    return await call.cached(_name(call), lambda c: [_search(c, s) for s in body.searches])


async def recommend_points(call: Call) -> Any:
    body: schemas.RecommendRequest = call.body
    check_limit(call, body.limit, body.offset)
    service = call.ctx.service

    def read(c: Collection) -> list[dict[str, Any]]:
        target, ids = service.recommend_target(c, body.positive or [], body.negative or [])
        return nearest(c, target, filter=_without(body.filter, ids), params=body.params,
                       limit=body.limit, offset=body.offset, with_payload=body.with_payload,
                       with_vector=body.with_vector, score_threshold=body.score_threshold)

    return await call.cached(_name(call), read)


def _query(service: VectorService, c: Collection, body: schemas.QueryRequest
           ) -> dict[str, Any]:
    limit = body.limit or 10
    query = body.query
    if query is None:  # no query: points in id order, as Qdrant answers
        page, _ = c.scroll(body.filter, limit + (body.offset or 0), None,
                           convert.with_payload(body.with_payload, False),
                           convert.with_vector(body.with_vector))
        points = [{**convert.record(r), "version": 0, "score": 0.0}
                  for r in page[body.offset or 0:]]
        return {"points": points}
    exclude: list[PointId] = []
    if isinstance(query, schemas.RecommendQuery):
        target, exclude = service.recommend_target(c, query.recommend.positive or [],
                                                   query.recommend.negative or [])
    else:
        example = query.nearest if isinstance(query, schemas.NearestQuery) else query
        if isinstance(example, np.ndarray):
            target = example
        else:  # a point id: search with that point's stored vector
            target = service.vectors_of(c, [example])[0]
            exclude = [example]
        if isinstance(query, schemas.NearestQuery) and query.mmr is not None:
            return {"points": _diverse(c, target, _without(body.filter, exclude), body,
                                       query.mmr, limit)}
    return {"points": nearest(
        c, target, filter=_without(body.filter, exclude), params=body.params, limit=limit,
        offset=body.offset, with_payload=body.with_payload, with_vector=body.with_vector,
        score_threshold=body.score_threshold)}


def _diverse(c: Collection, target: np.ndarray, filter: dict[str, Any] | None,
             body: schemas.QueryRequest, mmr: schemas.Mmr, limit: int) -> list[dict[str, Any]]:
    """Nearest candidates, then a maximal-marginal-relevance pick among them."""
    offset = body.offset or 0
    wanted = limit + offset
    candidates = nearest(c, target, filter=filter, params=body.params,
                         limit=max(mmr.candidates_limit or wanted, wanted), offset=0,
                         with_payload=body.with_payload, with_vector=True,
                         score_threshold=body.score_threshold)
    if not candidates:
        return []
    order = maximal_marginal_relevance(
        np.array([p["score"] for p in candidates]),
        np.array([p["vector"] for p in candidates], dtype=np.float32),
        c.config.metric, 0.5 if mmr.diversity is None else mmr.diversity, wanted)
    picked = [candidates[i] for i in order[offset:]]
    if not body.with_vector:
        for point in picked:
            del point["vector"]
    return picked


async def query_points(call: Call) -> Any:
    body: schemas.QueryRequest = call.body or schemas.QueryRequest()
    check_limit(call, body.limit or 10, body.offset)
    service = call.ctx.service
    return await call.cached(_name(call), lambda c: _query(service, c, body))


async def query_batch(call: Call) -> Any:
    body: schemas.QueryRequestBatch = call.body
    check_batch(call, len(body.searches), "queries")
    for s in body.searches:
        check_limit(call, s.limit or 10, s.offset)
    service = call.ctx.service
    return await call.cached(_name(call), lambda c: [_query(service, c, s)
                                                     for s in body.searches])


OPERATIONS = [
    Operation("POST", Q + "/search", "search_points", "search", "Nearest neighbours of a vector",
              search_points, body=schemas.SearchRequest, params=schemas.ReadParams,
              search_like=True),
    Operation("POST", Q + "/search/batch", "search_batch_points", "search",
              "Several searches in one request", search_batch, body=schemas.SearchRequestBatch,
              params=schemas.ReadParams, search_like=True),
    Operation("POST", Q + "/recommend", "recommend_points", "search",
              "Points like the positive and unlike the negative examples", recommend_points,
              body=schemas.RecommendRequest, params=schemas.ReadParams, search_like=True),
    Operation("POST", Q + "/query", "query_points", "search",
              "Universal query: nearest (vector or point id) or recommend", query_points,
              body=schemas.QueryRequest, params=schemas.ReadParams, body_required=False,
              search_like=True),
    Operation("POST", Q + "/query/batch", "query_batch_points", "search",
              "Several queries in one request", query_batch, body=schemas.QueryRequestBatch,
              params=schemas.ReadParams, search_like=True),
]
