"""Every endpoint of the Qdrant subset, driven by the official qdrant-client (REST).

Results are checked against numpy's exact answers, not just for "no error":
the point is that code written for Qdrant gets the same answers here.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from apiutil import ServerProcess
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

DIM = 16
N = 300
# search/recommend/search_batch are deprecated in the client (not in the REST API,
# which Qdrant still serves); they are exercised here on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:`(search|recommend|search_batch)` method")


def data(seed: int = 0) -> tuple[np.ndarray, list[dict[str, object]]]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((N, DIM)).astype(np.float32)
    payloads: list[dict[str, object]] = [
        {"group": "abc"[i % 3], "n": i, "tags": ["even" if i % 2 == 0 else "odd"]}
        for i in range(N)]
    return vectors, payloads


def exact(vectors: np.ndarray, query: np.ndarray, distance: models.Distance,
          k: int, allowed: np.ndarray | None = None) -> tuple[list[int], np.ndarray]:
    if distance == models.Distance.COSINE:
        v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        scores = v @ (query / np.linalg.norm(query))
        order = np.argsort(-scores, kind="stable")
    elif distance == models.Distance.DOT:
        scores = vectors @ query
        order = np.argsort(-scores, kind="stable")
    else:
        scores = np.linalg.norm(vectors - query, axis=1)
        order = np.argsort(scores, kind="stable")
    if allowed is not None:
        order = order[allowed[order]]
    top = order[:k]
    return [int(i) for i in top], scores[top]


def make_collection(client: QdrantClient, name: str, distance: models.Distance,
                    **kwargs: object) -> tuple[np.ndarray, list[dict[str, object]]]:
    if client.collection_exists(name):
        client.delete_collection(name)
    assert client.create_collection(
        name, vectors_config=models.VectorParams(size=DIM, distance=distance), **kwargs)
    vectors, payloads = data()
    half = N // 2
    client.upsert(name, points=[
        models.PointStruct(id=i, vector=vectors[i].tolist(), payload=payloads[i])
        for i in range(half)], wait=True)
    client.upsert(name, points=models.Batch(
        ids=list(range(half, N)), vectors=vectors[half:].tolist(), payloads=payloads[half:]),
        wait=True)
    return vectors, payloads


def test_root_reports_a_compatible_version(client: QdrantClient, server: ServerProcess) -> None:
    info = client.info()
    assert info.version.startswith("1.")
    assert "peregrine" in info.title
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_collection_lifecycle(client: QdrantClient) -> None:
    name = "lifecycle"
    assert not client.collection_exists(name)
    assert client.create_collection(
        name,
        vectors_config=models.VectorParams(size=DIM, distance=models.Distance.DOT),
        hnsw_config=models.HnswConfigDiff(m=8, ef_construct=64),
        quantization_config=models.ScalarQuantization(
            scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8)),
    )
    assert client.collection_exists(name)
    assert name in [c.name for c in client.get_collections().collections]
    info = client.get_collection(name)
    assert info.status == models.CollectionStatus.GREEN
    assert info.points_count == 0
    params = info.config.params.vectors
    assert isinstance(params, models.VectorParams)
    assert (params.size, params.distance) == (DIM, models.Distance.DOT)
    assert (info.config.hnsw_config.m, info.config.hnsw_config.ef_construct) == (8, 64)
    assert info.config.quantization_config is not None
    with pytest.raises(UnexpectedResponse) as exc:
        client.create_collection(
            name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.DOT))
    assert exc.value.status_code == 409
    assert client.delete_collection(name) is True
    assert not client.collection_exists(name)
    assert client.delete_collection(name) is False
    with pytest.raises(UnexpectedResponse) as exc:
        client.get_collection(name)
    assert exc.value.status_code == 404


@pytest.mark.parametrize("distance", [models.Distance.COSINE, models.Distance.DOT,
                                      models.Distance.EUCLID])
def test_search_matches_exact_answers(client: QdrantClient, distance: models.Distance) -> None:
    name = f"search-{distance.value.lower()}"
    vectors, _ = make_collection(client, name, distance)
    assert client.count(name).count == N
    rng = np.random.default_rng(7)
    for query in rng.standard_normal((5, DIM)).astype(np.float32):
        ids, scores = exact(vectors, query, distance, 10)
        hits = client.search(name, query_vector=query.tolist(), limit=10,
                             search_params=models.SearchParams(exact=True))
        assert [h.id for h in hits] == ids
        np.testing.assert_allclose([h.score for h in hits], scores, rtol=1e-4, atol=1e-4)
        approx = client.search(name, query_vector=query.tolist(), limit=10,
                               search_params=models.SearchParams(hnsw_ef=128))
        assert len(set(h.id for h in approx) & set(ids)) >= 8
        page2 = client.search(name, query_vector=query.tolist(), limit=5, offset=5,
                              search_params=models.SearchParams(exact=True))
        assert [h.id for h in page2] == ids[5:10]


def test_search_options(client: QdrantClient) -> None:
    name = "options"
    vectors, payloads = make_collection(client, name, models.Distance.COSINE)
    query = vectors[3] + 0.01
    group_b = models.Filter(must=[models.FieldCondition(
        key="group", match=models.MatchValue(value="b"))])
    allowed = np.array([p["group"] == "b" for p in payloads])
    ids, scores = exact(vectors, query, models.Distance.COSINE, 7, allowed)
    hits = client.search(name, query_vector=query.tolist(), query_filter=group_b, limit=7,
                         with_payload=["n"], with_vectors=True,
                         search_params=models.SearchParams(exact=True))
    assert [h.id for h in hits] == ids
    assert all(h.payload == {"n": h.id} for h in hits)
    assert all(h.vector is not None and len(h.vector) == DIM for h in hits)  # type: ignore[arg-type]
    threshold = float(scores[3])
    above = client.search(name, query_vector=query.tolist(), query_filter=group_b, limit=7,
                          score_threshold=threshold, search_params=models.SearchParams(exact=True))
    assert [h.id for h in above] == ids[:4]
    excluded = client.search(name, query_vector=query.tolist(), limit=3,
                             with_payload=models.PayloadSelectorExclude(exclude=["tags", "n"]))
    assert all(h.payload == {"group": payloads[int(h.id)]["group"]} for h in excluded)

    batch = client.search_batch(name, requests=[
        models.SearchRequest(vector=vectors[i].tolist(), limit=3, filter=group_b)
        for i in range(4)])
    assert len(batch) == 4
    for i, hits in enumerate(batch):
        assert [h.id for h in hits] == exact(vectors, vectors[i], models.Distance.COSINE, 3,
                                             allowed)[0]


def test_query_api(client: QdrantClient) -> None:
    name = "query"
    vectors, _ = make_collection(client, name, models.Distance.COSINE)
    q = vectors[10]
    ids, _ = exact(vectors, q, models.Distance.COSINE, 6)
    res = client.query_points(name, query=q.tolist(), limit=5,
                              search_params=models.SearchParams(exact=True))
    assert [p.id for p in res.points] == ids[:5]
    res = client.query_points(name, query=models.NearestQuery(nearest=q.tolist()), limit=5,
                              offset=1, search_params=models.SearchParams(exact=True))
    assert [p.id for p in res.points] == ids[1:6]
    by_id = client.query_points(name, query=10, limit=5,
                                search_params=models.SearchParams(exact=True))
    assert [p.id for p in by_id.points] == ids[1:6]  # the point itself is excluded
    odd = models.Filter(must=[models.FieldCondition(key="tags",
                                                    match=models.MatchAny(any=["odd"]))])
    filtered = client.query_points(name, query=q.tolist(), query_filter=odd, limit=5,
                                   with_payload=True)
    assert all(p.payload is not None and p.payload["n"] % 2 == 1 for p in filtered.points)
    batch = client.query_batch_points(name, requests=[
        models.QueryRequest(query=vectors[i].tolist(), limit=2) for i in range(3)])
    assert [r.points[0].id for r in batch] == [0, 1, 2]


def test_query_mmr_diversifies_near_duplicates(client: QdrantClient) -> None:
    name = "mmr"
    client.create_collection(name, vectors_config={"": models.VectorParams(
        size=3, distance=models.Distance.COSINE)})
    points = {1: [1.0, 0.0, 0.0], 2: [0.999, 0.01, 0.0], 3: [0.998, 0.02, 0.0],
              4: [0.7, 0.7, 0.0], 5: [0.7, 0.0, 0.7]}
    client.upsert(name, [models.PointStruct(id=i, vector={"": v}) for i, v in points.items()])
    query = [1.0, 0.05, 0.05]
    plain = client.query_points(name, query=query, limit=3).points
    assert {p.id for p in plain} == {1, 2, 3}  # the three near-duplicates
    diverse = client.query_points(name, query=models.NearestQuery(
        nearest=query, mmr=models.Mmr(diversity=0.8, candidates_limit=5)), limit=3).points
    assert diverse[0].id == plain[0].id  # the most relevant always comes first
    assert {4, 5} <= {p.id for p in diverse}
    relevance_only = client.query_points(name, query=models.NearestQuery(
        nearest=query, mmr=models.Mmr(diversity=0.0)), limit=3).points
    assert [p.id for p in relevance_only] == [p.id for p in plain]


def test_recommend(client: QdrantClient) -> None:
    name = "recommend"
    vectors, _ = make_collection(client, name, models.Distance.DOT)
    pos, neg = [1, 2], [3]
    target = 2 * vectors[pos].mean(axis=0) - vectors[neg].mean(axis=0)
    allowed = np.ones(N, dtype=bool)
    allowed[pos + neg] = False
    want, _ = exact(vectors, target, models.Distance.DOT, 5, allowed)
    hits = client.recommend(name, positive=pos, negative=neg, limit=5,
                            search_params=models.SearchParams(exact=True))
    assert [h.id for h in hits] == want
    via_query = client.query_points(
        name, query=models.RecommendQuery(recommend=models.RecommendInput(
            positive=pos, negative=neg)), limit=5,
        search_params=models.SearchParams(exact=True))
    assert [p.id for p in via_query.points] == want
    with pytest.raises(UnexpectedResponse) as exc:
        client.recommend(name, positive=[10_000], limit=3)
    assert exc.value.status_code == 404


def test_point_reads_and_deletes(client: QdrantClient) -> None:
    name = "points"
    vectors, payloads = make_collection(client, name, models.Distance.EUCLID)
    got = client.retrieve(name, ids=[5, 1, 999], with_vectors=True)
    assert sorted(r.id for r in got) == [1, 5]
    for r in got:
        assert r.payload == payloads[int(r.id)]
        np.testing.assert_allclose(r.vector, vectors[int(r.id)], rtol=1e-6)  # type: ignore[arg-type]
    seen: list[int] = []
    offset = None
    while True:
        page, offset = client.scroll(name, limit=64, offset=offset, with_payload=False)
        seen += [int(p.id) for p in page]
        if offset is None:
            break
    assert seen == list(range(N))
    group_a = models.Filter(must=[models.FieldCondition(key="group",
                                                        match=models.MatchValue(value="a"))])
    assert client.count(name, count_filter=group_a).count == N // 3
    client.delete(name, points_selector=models.PointIdsList(points=[0, 1, 2]), wait=True)
    assert client.count(name).count == N - 3
    assert client.count(name, count_filter=group_a).count == N // 3 - 1
    client.delete(name, points_selector=models.FilterSelector(filter=group_a), wait=True)
    assert client.count(name, count_filter=group_a).count == 0
    assert client.count(name).count == N - 3 - (N // 3 - 1)
    assert client.retrieve(name, ids=[0, 3]) == []


def test_payload_updates(client: QdrantClient) -> None:
    name = "payloads"
    make_collection(client, name, models.Distance.COSINE)
    client.set_payload(name, payload={"color": "red"}, points=[1, 2], wait=True)
    assert client.retrieve(name, [1])[0].payload == {"group": "b", "n": 1, "tags": ["odd"],
                                                     "color": "red"}
    client.overwrite_payload(name, payload={"only": True}, points=[2], wait=True)
    assert client.retrieve(name, [2])[0].payload == {"only": True}
    client.delete_payload(name, keys=["tags", "n"], points=[1], wait=True)
    assert client.retrieve(name, [1])[0].payload == {"group": "b", "color": "red"}
    client.clear_payload(name, points_selector=models.PointIdsList(points=[1]), wait=True)
    assert client.retrieve(name, [1])[0].payload in (None, {})
    group_c = models.Filter(must=[models.FieldCondition(key="group",
                                                        match=models.MatchValue(value="c"))])
    client.set_payload(name, payload={"flag": 1}, points=group_c, wait=True)
    flagged = models.Filter(must=[models.FieldCondition(key="flag",
                                                        match=models.MatchValue(value=1))])
    assert client.count(name, count_filter=flagged).count == N // 3 - 1  # #2 lost "group"


def test_payload_index(client: QdrantClient) -> None:
    name = "indexes"
    make_collection(client, name, models.Distance.COSINE)
    client.create_payload_index(name, "n", field_schema=models.PayloadSchemaType.INTEGER,
                                wait=True)
    client.create_payload_index(name, "group", field_schema="keyword", wait=True)
    schema = client.get_collection(name).payload_schema
    assert schema["n"].data_type == models.PayloadSchemaType.INTEGER
    assert schema["group"].points == N
    small = models.Filter(must=[models.FieldCondition(key="n", range=models.Range(lt=10))])
    assert client.count(name, count_filter=small).count == 10
    client.delete_payload_index(name, "n", wait=True)
    assert "n" not in client.get_collection(name).payload_schema


def test_uuid_ids(client: QdrantClient) -> None:
    name = "uuids"
    client.create_collection(name, vectors_config=models.VectorParams(
        size=4, distance=models.Distance.COSINE))
    ids = [str(uuid.uuid4()) for _ in range(3)]
    client.upsert(name, points=[models.PointStruct(id=i, vector=[1.0, k, 0.5, 0.25],
                                                   payload={"k": k})
                                for k, i in enumerate(ids)])
    assert sorted(str(r.id) for r in client.retrieve(name, ids)) == sorted(ids)
    hit = client.query_points(name, query=[1.0, 2.0, 0.5, 0.25], limit=1).points[0]
    assert str(hit.id) == ids[2]


def test_snapshots(client: QdrantClient, server: ServerProcess, tmp_path: Path) -> None:
    name = "snap"
    vectors, _ = make_collection(client, name, models.Distance.COSINE)
    snap = client.create_snapshot(name, wait=True)
    assert snap is not None and snap.size > 0
    assert snap.name in [s.name for s in client.list_snapshots(name)]
    download = httpx.get(f"{server.url}/collections/{name}/snapshots/{snap.name}")
    assert download.status_code == 200
    assert len(download.content) == snap.size
    assert hashlib.sha256(download.content).hexdigest() == snap.checksum

    client.delete(name, points_selector=models.PointIdsList(points=list(range(50))), wait=True)
    assert client.count(name).count == N - 50
    url = f"{server.url}/collections/{name}/snapshots/{snap.name}"
    assert client.recover_snapshot(name, location=url, checksum=snap.checksum, wait=True)
    assert client.count(name).count == N
    hits = client.search(name, query_vector=vectors[0].tolist(), limit=1)
    assert hits[0].id == 0

    local = server.data / "snapshots" / name / snap.name
    assert client.recover_snapshot("snap-copy", location=local.as_uri(), wait=True)
    assert client.count("snap-copy").count == N

    path = tmp_path / "upload.snapshot"
    path.write_bytes(download.content)
    with path.open("rb") as f:
        client.http.snapshots_api.recover_from_uploaded_snapshot(
            collection_name="snap-upload", wait=True, snapshot=f)
    assert client.count("snap-upload").count == N
    assert client.get_collection("snap-upload").config.params.vectors.size == DIM  # type: ignore[union-attr]

    with pytest.raises(UnexpectedResponse) as exc:
        client.recover_snapshot(name, location=url, checksum="0" * 64)
    assert exc.value.status_code == 400
    assert client.count(name).count == N  # a refused recovery changes nothing
    assert client.delete_snapshot(name, snap.name, wait=True)
    assert snap.name not in [s.name for s in client.list_snapshots(name)]
