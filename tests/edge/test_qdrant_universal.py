"""Multi-stage queries (prefetch, nested; fusion rrf and dbsf; re-ranking; random
samples) through the official qdrant-client. Fused rankings are checked against
qdrant-client's own fusion functions (its local mode's reference code) applied
to numpy's exact rankings."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from apiutil import ServerProcess
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse
from qdrant_client.hybrid.fusion import (
    distribution_based_score_fusion,
    reciprocal_rank_fusion,
)

DIM, N = 8, 500
EXACT = models.SearchParams(exact=True)


@pytest.fixture(scope="module")
def vecs(client: QdrantClient) -> np.ndarray:
    v = np.random.default_rng(21).standard_normal((N, DIM)).astype(np.float32)
    client.create_collection("u", vectors_config=models.VectorParams(
        size=DIM, distance=models.Distance.DOT))
    client.upsert("u", points=[models.PointStruct(id=i, vector=v[i].tolist(),
                                                  payload={"group": i % 5, "i": i})
                               for i in range(N)], wait=True)
    return v


def group_is(*groups: int) -> models.Filter:
    return models.Filter(must=[models.FieldCondition(key="group",
                                                     match=models.MatchAny(any=list(groups)))])


def exact(vecs: np.ndarray, q: np.ndarray, limit: int, groups: Any = None,
          among: Any = None) -> list[models.ScoredPoint]:
    scores = vecs @ q
    order = [i for i in np.argsort(-scores, kind="stable").tolist()
             if (groups is None or i % 5 in groups) and (among is None or i in among)]
    return [models.ScoredPoint(id=i, version=0, score=float(scores[i]))
            for i in order[:limit]]


def pairs(points: list[models.ScoredPoint]) -> list[tuple[Any, float]]:
    return [(p.id, round(p.score, 4)) for p in points]


def prefetch(q: np.ndarray, limit: int, flt: models.Filter | None = None) -> models.Prefetch:
    return models.Prefetch(query=q.tolist(), limit=limit, filter=flt, params=EXACT)


@pytest.mark.parametrize("method", ["rrf", "dbsf"])
def test_fusion_of_two_prefetches(client: QdrantClient, vecs: np.ndarray, method: str) -> None:
    rng = np.random.default_rng(1)
    q1, q2 = rng.standard_normal((2, DIM)).astype(np.float32)
    fuse = reciprocal_rank_fusion if method == "rrf" else distribution_based_score_fusion
    res = client.query_points("u", prefetch=[prefetch(q1, 30, group_is(0, 1, 2)),
                                             prefetch(q2, 20)],
                              query=models.FusionQuery(fusion=models.Fusion(method)),
                              limit=10, with_payload=True)
    want = fuse([exact(vecs, q1, 30, {0, 1, 2}), exact(vecs, q2, 20)], limit=10)
    assert pairs(res.points) == pairs(want)
    assert all(p.payload == {"group": p.id % 5, "i": p.id} for p in res.points)
    # The request's filter reaches every stage; offset and score_threshold apply last.
    res = client.query_points("u", prefetch=[prefetch(q1, 30), prefetch(q2, 20)],
                              query=models.FusionQuery(fusion=models.Fusion(method)),
                              query_filter=group_is(3), limit=5, offset=2)
    want = fuse([exact(vecs, q1, 30, {3}), exact(vecs, q2, 20, {3})], limit=7)[2:]
    assert pairs(res.points) == pairs(want)
    cut = want[2].score
    res = client.query_points("u", prefetch=[prefetch(q1, 30), prefetch(q2, 20)],
                              query=models.FusionQuery(fusion=models.Fusion(method)),
                              query_filter=group_is(3), limit=7, score_threshold=cut)
    assert all(p.score >= cut for p in res.points) and len(res.points) >= 3


def test_a_query_reranks_exactly_what_its_nested_prefetches_found(
        client: QdrantClient, vecs: np.ndarray) -> None:
    rng = np.random.default_rng(2)
    q1, q2, q3 = rng.standard_normal((3, DIM)).astype(np.float32)
    inner = models.Prefetch(prefetch=[prefetch(q1, 40), prefetch(q2, 40)],
                            query=models.FusionQuery(fusion=models.Fusion.RRF), limit=25)
    res = client.query_points("u", prefetch=inner, query=q3.tolist(), limit=8)
    pool = {p.id for p in reciprocal_rank_fusion([exact(vecs, q1, 40), exact(vecs, q2, 40)],
                                                 limit=25)}
    assert pairs(res.points) == pairs(exact(vecs, q3, 8, among=pool))
    # By a stored point: the same, without the point itself.
    res = client.query_points("u", prefetch=prefetch(q1, 50), query=7, limit=5)
    pool = {p.id for p in exact(vecs, q1, 50)} - {7}
    assert pairs(res.points) == pairs(exact(vecs, vecs[7], 5, among=pool))


def test_a_random_sample_respects_the_filter_and_is_never_cached(
        client: QdrantClient, vecs: np.ndarray) -> None:
    sample = models.SampleQuery(sample=models.Sample.RANDOM)
    seen = []
    for _ in range(3):
        res = client.query_points("u", query=sample, query_filter=group_is(4), limit=6)
        ids = [p.id for p in res.points]
        assert len(set(ids)) == 6 and all(i % 5 == 4 for i in ids)
        seen.append(ids)
    assert len({tuple(s) for s in seen}) > 1
    few = client.query_points("u", prefetch=prefetch(vecs[0], 4), query=sample, limit=10)
    assert {p.id for p in few.points} == {p.id for p in exact(vecs, vecs[0], 4)}


def test_stages_that_cannot_work_are_refused(client: QdrantClient, vecs: np.ndarray) -> None:
    rrf = models.FusionQuery(fusion=models.Fusion.RRF)
    deep: models.Prefetch = prefetch(vecs[0], 5)
    for _ in range(9):
        deep = models.Prefetch(prefetch=deep, query=rrf, limit=5)
    for kwargs in ({"query": rrf}, {"prefetch": [prefetch(vecs[0], 5)]},
                   {"prefetch": deep, "query": rrf},
                   {"prefetch": [prefetch(vecs[0], 10**6)], "query": rrf}):
        with pytest.raises(UnexpectedResponse) as exc:
            client.query_points("u", **kwargs)
        assert exc.value.status_code == 400, kwargs


def top(scores: np.ndarray, limit: int, exclude: set[int] = frozenset(),  # type: ignore[assignment]
        groups: Any = None) -> list[tuple[int, float]]:
    order = [i for i in np.argsort(-scores, kind="stable").tolist()
             if i not in exclude and (groups is None or i % 5 in groups)]
    return [(i, round(float(scores[i]), 4)) for i in order[:limit]]


@pytest.mark.parametrize("strategy", ["best_score", "sum_scores"])
def test_recommend_strategies_score_every_point_as_qdrant_does(
        client: QdrantClient, vecs: np.ndarray, strategy: str) -> None:
    from qdrant_client.local.distances import (
        RecoQuery,
        calculate_recommend_best_scores,
        calculate_recommend_sum_scores,
    )

    rng = np.random.default_rng(3)
    raw = rng.standard_normal(DIM).astype(np.float32)
    positive, negative = [3, raw.tolist()], [11, 12]
    reco = RecoQuery([vecs[3], raw], [vecs[11], vecs[12]], models.RecommendStrategy(strategy))
    calc = calculate_recommend_best_scores if strategy == "best_score" else \
        calculate_recommend_sum_scores
    scores = calc(reco, vecs, models.Distance.DOT)
    res = client.query_points("u", query=models.RecommendQuery(recommend=models.RecommendInput(
        positive=positive, negative=negative, strategy=models.RecommendStrategy(strategy))),
        query_filter=group_is(0, 1, 2), limit=12)
    assert pairs(res.points) == top(scores, 12, {3, 11, 12}, {0, 1, 2})
    if strategy == "best_score":  # negatives alone are enough
        only = RecoQuery([], [vecs[11]], models.RecommendStrategy.BEST_SCORE)
        res = client.query_points("u", query=models.RecommendQuery(
            recommend=models.RecommendInput(negative=[11], strategy="best_score")), limit=5)
        assert pairs(res.points) == top(calculate_recommend_best_scores(
            only, vecs, models.Distance.DOT), 5, {11})


def test_discover_and_context_queries_score_as_qdrant_does(
        client: QdrantClient, vecs: np.ndarray) -> None:
    from qdrant_client.local.distances import (
        ContextPair,
        ContextQuery,
        DiscoveryQuery,
        calculate_context_scores,
        calculate_discovery_scores,
    )

    context = [models.ContextPair(positive=1, negative=2),
               models.ContextPair(positive=30, negative=vecs[40].tolist())]
    ref_pairs = [ContextPair(vecs[1], vecs[2]), ContextPair(vecs[30], vecs[40])]
    res = client.query_points("u", query=models.DiscoverQuery(discover=models.DiscoverInput(
        target=9, context=context)), limit=10)
    want = calculate_discovery_scores(DiscoveryQuery(vecs[9], ref_pairs), vecs,
                                      models.Distance.DOT)
    assert pairs(res.points) == top(want, 10, {1, 2, 30, 9})
    res = client.query_points("u", query=models.ContextQuery(context=context), limit=10,
                              query_filter=group_is(2))
    want = calculate_context_scores(ContextQuery(ref_pairs), vecs, models.Distance.DOT)
    # Many points satisfy every pair (score 0): ties may come in any order.
    got = pairs(res.points)
    assert [sc for _, sc in got] == [sc for _, sc in top(want, 10, {1, 2, 30}, {2})]
    assert all(i % 5 == 2 and i not in (1, 2, 30) and round(float(want[i]), 4) == sc
               for i, sc in got)
    with pytest.raises(UnexpectedResponse) as exc:
        client.query_points("u", query=models.ContextQuery(context=[]))
    assert exc.value.status_code == 400


def test_dbsf_puts_the_nearest_first_on_distances_and_ef_is_capped(
        client: QdrantClient, server: ServerProcess) -> None:
    import httpx

    rng = np.random.default_rng(5)
    v = rng.standard_normal((100, 4)).astype(np.float32)
    client.create_collection("euclid", vectors_config=models.VectorParams(
        size=4, distance=models.Distance.EUCLID))
    client.upsert("euclid", points=[models.PointStruct(id=i, vector=v[i].tolist())
                                    for i in range(100)], wait=True)
    q = rng.standard_normal(4).astype(np.float32)
    nearest = [p.id for p in client.query_points("euclid", query=q.tolist(), limit=5,
                                                 search_params=EXACT).points]
    same = models.Prefetch(query=q.tolist(), limit=5, params=EXACT)
    fused = client.query_points("euclid", prefetch=[same, same],
                                query=models.FusionQuery(fusion=models.Fusion.DBSF), limit=5)
    assert [p.id for p in fused.points] == nearest
    r = httpx.post(f"{server.url}/collections/euclid/points/query", json={
        "prefetch": {"query": q.tolist(), "params": {"hnsw_ef": 10**8}},
        "query": {"fusion": "rrf"}}, timeout=10)
    assert r.status_code == 400 and "max_ef" in r.text


def test_lookup_from_takes_example_vectors_from_another_collection(
        client: QdrantClient, vecs: np.ndarray) -> None:
    other = np.random.default_rng(8).standard_normal((10, DIM)).astype(np.float32)
    client.create_collection("examples", vectors_config=models.VectorParams(
        size=DIM, distance=models.Distance.DOT))
    client.upsert("examples", points=[models.PointStruct(id=i, vector=other[i].tolist())
                                      for i in range(10)], wait=True)
    where = models.LookupLocation(collection="examples")
    res = client.query_points("u", query=3, lookup_from=where, limit=6, search_params=EXACT)
    # Point 3 of "examples", not of "u"; and "u"'s point 3 is not left out.
    assert pairs(res.points) == pairs(exact(vecs, other[3], 6))
    res = client.query_points("u", query=models.RecommendQuery(recommend=models.RecommendInput(
        positive=[1, 2], negative=[5], strategy="sum_scores")), lookup_from=where, limit=5)
    sums = vecs @ other[1] + vecs @ other[2] - vecs @ other[5]
    assert pairs(res.points) == top(sums, 5)
    staged = client.query_points("u", prefetch=models.Prefetch(
        query=4, lookup_from=where, limit=30, params=EXACT), query=vecs[0].tolist(), limit=5)
    pool = {p.id for p in exact(vecs, other[4], 30)}
    assert pairs(staged.points) == pairs(exact(vecs, vecs[0], 5, among=pool))
    # Writes to "examples" are seen at once: the answer is not cached.
    client.upsert("examples", points=[models.PointStruct(id=3, vector=(-other[3]).tolist())],
                  wait=True)
    res = client.query_points("u", query=3, lookup_from=where, limit=6, search_params=EXACT)
    assert pairs(res.points) == pairs(exact(vecs, -other[3], 6))
    with pytest.raises(UnexpectedResponse) as exc:
        client.query_points("u", query=99, lookup_from=where)
    assert exc.value.status_code == 404
