"""Nearest-neighbour reads: search, batch search, recommend and the query API.

Translation only: each handler turns the body into the front door's typed
request and the hits into Qdrant's ScoredPoint objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peregrine.edge.http.protocol import Call, Operation
from peregrine.edge.qdrant import convert, schemas
from peregrine.edge.qdrant.routes.common import cached_read, collection_name
from peregrine.vector.service import DistanceMatrix, Hit, RecommendQuery

if TYPE_CHECKING:
    from peregrine.edge.qdrant.protocol import QdrantProtocol

Q = "/collections/{collection_name}/points"


def _points(hits: list[Hit]) -> list[dict[str, Any]]:
    return [convert.scored_point(h) for h in hits]


def _uncacheable(body: schemas.QueryRequest | schemas.Prefetch) -> bool:
    """Whether a random sample or another collection's points (``lookup_from``,
    whose writes would not invalidate the entry) take part anywhere."""
    stages = body.prefetch if isinstance(body.prefetch, list) else (
        [body.prefetch] if body.prefetch is not None else [])
    return (isinstance(body.query, schemas.SampleQuery) or body.lookup_from is not None
            or any(_uncacheable(p) for p in stages))


def operations(protocol: QdrantProtocol) -> list[Operation]:
    vector = protocol.vector

    async def search_points(call: Call) -> Any:
        body: schemas.SearchRequest = call.body
        name = collection_name(call)
        query, using = convert.search_vector(body)
        options = convert.read_options(body, body.limit, using=using)
        return await cached_read(call, vector,
                                 lambda: _points(vector.search(name, query, options)))

    async def search_batch(call: Call) -> Any:
        body: schemas.SearchRequestBatch = call.body
        name = collection_name(call)
        searches = []
        for s in body.searches:
            query, using = convert.search_vector(s)
            searches.append((query, convert.read_options(s, s.limit, using=using)))
        return await cached_read(call, vector, lambda: [
            _points(hits) for hits in vector.search_batch(name, searches)])

    async def recommend_points(call: Call) -> Any:
        body: schemas.RecommendRequest = call.body
        name = collection_name(call)
        query = RecommendQuery(tuple(map(convert.example, body.positive or ())),
                               tuple(map(convert.example, body.negative or ())),
                               body.strategy or "average_vector")
        options = convert.read_options(body, body.limit)
        return await cached_read(call, vector,
                                 lambda: _points(vector.recommend(name, query, options)),
                                 cache=body.lookup_from is None)

    async def query_points(call: Call) -> Any:
        body: schemas.QueryRequest = call.body or schemas.QueryRequest()
        name = collection_name(call)
        query = convert.query(body)
        options = convert.read_options(body, body.limit or 10)
        stages = convert.prefetch(body)
        return await cached_read(call, vector, lambda: {
            "points": _points(vector.query(name, query, options, stages))},
            cache=not _uncacheable(body))

    async def query_batch(call: Call) -> Any:
        body: schemas.QueryRequestBatch = call.body
        name = collection_name(call)
        queries = [(convert.query(q), convert.read_options(q, q.limit or 10),
                    convert.prefetch(q)) for q in body.searches]
        return await cached_read(call, vector, lambda: [
            {"points": _points(hits)} for hits in vector.query_batch(name, queries)],
            cache=not any(_uncacheable(q) for q in body.searches))

    async def search_groups(call: Call) -> Any:
        body: schemas.SearchGroupsRequest = call.body
        name = collection_name(call)
        query, using = convert.search_vector(body)
        options = convert.read_options(body, body.limit, using=using)
        spec = convert.group_spec(body, body.limit)
        return await cached_read(call, vector, lambda: convert.groups(
            vector.search_groups(name, query, options, spec)),
            cache=spec.lookup is None)

    async def query_groups(call: Call) -> Any:
        body: schemas.QueryGroupsRequest = call.body
        name = collection_name(call)
        limit = body.limit or 10
        spec = convert.group_spec(body, limit)
        return await cached_read(call, vector, lambda: convert.groups(vector.query_groups(
            name, convert.query(body), convert.read_options(body, limit), spec,
            convert.prefetch(body))), cache=spec.lookup is None and not _uncacheable(body))

    def matrix(call: Call) -> DistanceMatrix:
        body: schemas.SearchMatrixRequest = call.body or schemas.SearchMatrixRequest()
        return vector.distance_matrix(collection_name(call), body.sample or 10,
                                      body.limit or 3, body.filter, body.using)

    async def matrix_pairs(call: Call) -> Any:
        def build() -> dict[str, Any]:
            m = matrix(call)
            return {"pairs": [{"a": m.ids[r], "b": m.ids[c], "score": score}
                              for r, c, score in zip(m.rows, m.cols, m.scores, strict=True)]}

        return await cached_read(call, vector, build, cache=False)  # a random sample

    async def matrix_offsets(call: Call) -> Any:
        def build() -> dict[str, Any]:
            m = matrix(call)
            return {"offsets_row": m.rows, "offsets_col": m.cols, "scores": m.scores,
                    "ids": m.ids}

        return await cached_read(call, vector, build, cache=False)

    return [
        Operation("POST", Q + "/search/matrix/pairs", "search_matrix_pairs", "search",
                  "Each of a random sample's nearest among the sample, as pairs",
                  matrix_pairs, body=schemas.SearchMatrixRequest, params=schemas.ReadParams,
                  body_required=False),
        Operation("POST", Q + "/search/matrix/offsets", "search_matrix_offsets", "search",
                  "Each of a random sample's nearest among the sample, as offsets",
                  matrix_offsets, body=schemas.SearchMatrixRequest,
                  params=schemas.ReadParams, body_required=False),
        Operation("POST", Q + "/search/groups", "search_point_groups", "search",
                  "Nearest points, grouped by a payload field", search_groups,
                  body=schemas.SearchGroupsRequest, params=schemas.ReadParams, inline=True),
        Operation("POST", Q + "/query/groups", "query_points_groups", "search",
                  "Universal query, grouped by a payload field", query_groups,
                  body=schemas.QueryGroupsRequest, params=schemas.ReadParams, inline=True),
        Operation("POST", Q + "/search", "search_points", "search",
                  "Nearest neighbours of a vector", search_points, body=schemas.SearchRequest,
                  params=schemas.ReadParams, inline=True),
        Operation("POST", Q + "/search/batch", "search_batch_points", "search",
                  "Several searches in one request", search_batch,
                  body=schemas.SearchRequestBatch, params=schemas.ReadParams, inline=True),
        Operation("POST", Q + "/recommend", "recommend_points", "search",
                  "Points like the positive and unlike the negative examples",
                  recommend_points, body=schemas.RecommendRequest, params=schemas.ReadParams,
                  inline=True),
        Operation("POST", Q + "/query", "query_points", "search",
                  "Universal query: nearest (vector or point id) or recommend", query_points,
                  body=schemas.QueryRequest, params=schemas.ReadParams, body_required=False,
                  inline=True),
        Operation("POST", Q + "/query/batch", "query_batch_points", "search",
                  "Several queries in one request", query_batch,
                  body=schemas.QueryRequestBatch, params=schemas.ReadParams, inline=True),
    ]
