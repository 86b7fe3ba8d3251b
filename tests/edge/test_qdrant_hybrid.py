"""Named dense and sparse vectors through the official qdrant-client: collection
shapes, upserts in every form, sparse and hybrid queries (prefetch + RRF) against
plain-Python oracles, server-side BM25 documents, vector edits, bad input."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

N, DIM, VOCAB = 120, 6, 40


def _rows(seed: int = 1) -> tuple[np.ndarray, list[dict[int, float]]]:
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(N, DIM)).astype(np.float32)
    sparse = []
    for _ in range(N):
        k = int(rng.integers(1, 6))
        idx = rng.choice(VOCAB, k, replace=False)
        sparse.append({int(i): float(np.float32(v)) for i, v in zip(idx, rng.random(k),
                                                                   strict=True)})
    return dense, sparse


@pytest.fixture(scope="module")
def hybrid(client: QdrantClient) -> Iterator[tuple[str, np.ndarray, list[dict[int, float]]]]:
    name = f"hybrid-{uuid.uuid4().hex[:8]}"
    client.create_collection(
        name,
        vectors_config={"text-dense": models.VectorParams(size=DIM,
                                                          distance=models.Distance.COSINE)},
        sparse_vectors_config={"text-sparse": models.SparseVectorParams(
            modifier=models.Modifier.IDF)})
    dense, sparse = _rows()
    client.upsert(name, [models.PointStruct(
        id=i, payload={"i": i, "even": i % 2 == 0},
        vector={"text-dense": dense[i].tolist(),
                "text-sparse": models.SparseVector(indices=list(sparse[i]),
                                                   values=list(sparse[i].values()))})
        for i in range(N)])
    yield name, dense, sparse
    client.delete_collection(name)


def _idf_scores(sparse: list[dict[int, float]], query: dict[int, float]) -> dict[int, float]:
    n = len(sparse)
    out: dict[int, float] = {}
    for d, qv in query.items():
        df = sum(1 for row in sparse if d in row)
        idf = math.log((n - df + 0.5) / (df + 0.5) + 1)
        for pid, row in enumerate(sparse):
            if d in row:
                out[pid] = out.get(pid, 0.0) + row[d] * qv * idf
    return out


def _cosine(dense: np.ndarray, q: np.ndarray) -> np.ndarray:
    d = dense.astype(np.float64)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return d @ (q / np.linalg.norm(q))


def test_collection_reads_back_as_declared(client: QdrantClient, hybrid: Any) -> None:
    name, _, _ = hybrid
    info = client.get_collection(name)
    vectors = info.config.params.vectors
    assert isinstance(vectors, dict)
    assert vectors["text-dense"].size == DIM
    assert vectors["text-dense"].distance == models.Distance.COSINE
    sparse = info.config.params.sparse_vectors
    assert sparse is not None and sparse["text-sparse"].modifier == models.Modifier.IDF
    assert info.points_count == N


def test_sparse_query_matches_the_idf_oracle(client: QdrantClient, hybrid: Any) -> None:
    name, _, sparse = hybrid
    query = {3: 1.0, 7: 0.5, 11: 2.0}
    got = client.query_points(name, query=models.SparseVector(
        indices=list(query), values=list(query.values())), using="text-sparse", limit=10,
        with_payload=False).points
    expect = sorted(_idf_scores(sparse, query).items(), key=lambda kv: -kv[1])[:10]
    assert len(got) == len(expect)
    oracle = dict(expect)
    for point, (_, score) in zip(got, expect, strict=True):
        assert point.score == pytest.approx(score, rel=1e-4)
        assert oracle.get(int(point.id), _idf_scores(sparse, query)[int(point.id)]) == \
            pytest.approx(point.score, rel=1e-4)


def test_hybrid_prefetch_rrf_matches_the_oracle(client: QdrantClient, hybrid: Any) -> None:
    name, dense, sparse = hybrid
    q_dense = np.random.default_rng(9).normal(size=DIM).astype(np.float32)
    q_sparse = {1: 1.0, 2: 1.0, 5: 1.0, 8: 1.0}
    flt = models.Filter(must=[models.FieldCondition(key="even",
                                                    match=models.MatchValue(value=True))])
    got = client.query_points(name, prefetch=[
        models.Prefetch(query=q_dense.tolist(), using="text-dense", limit=20),
        models.Prefetch(query=models.SparseVector(indices=list(q_sparse),
                                                  values=list(q_sparse.values())),
                        using="text-sparse", limit=20),
    ], query=models.FusionQuery(fusion=models.Fusion.RRF), query_filter=flt, limit=10).points
    even = [i for i in range(N) if i % 2 == 0]
    cos = _cosine(dense, q_dense.astype(np.float64))
    dense_rank = sorted(even, key=lambda i: -cos[i])[:20]
    sp = _idf_scores(sparse, q_sparse)
    sparse_rank = sorted((i for i in sp if i % 2 == 0), key=lambda i: -sp[i])[:20]
    fused: dict[int, float] = {}
    for ranking in (dense_rank, sparse_rank):
        for pos, pid in enumerate(ranking):
            fused[pid] = fused.get(pid, 0.0) + 1.0 / (2 + pos)
    expect = sorted(fused.items(), key=lambda kv: -kv[1])[:10]
    assert [p.score for p in got] == pytest.approx([s for _, s in expect])
    for point in got:
        assert fused[int(point.id)] == pytest.approx(point.score)
        assert point.payload is not None and point.payload["even"] is True


def test_dense_by_name_and_vectors_read_back(client: QdrantClient, hybrid: Any) -> None:
    name, dense, sparse = hybrid
    q = dense[5]
    got = client.query_points(name, query=q.tolist(), using="text-dense", limit=3,
                              with_vectors=True).points
    assert int(got[0].id) == 5
    vec = got[0].vector
    assert isinstance(vec, dict)
    assert vec["text-dense"] == pytest.approx((q / np.linalg.norm(q)).tolist(), rel=1e-5)
    sp = vec["text-sparse"]
    assert isinstance(sp, models.SparseVector)
    assert dict(zip(sp.indices, sp.values, strict=True)) == pytest.approx(sparse[5])
    (rec,) = client.retrieve(name, [5], with_vectors=["text-sparse"])
    assert isinstance(rec.vector, dict) and set(rec.vector) == {"text-sparse"}
    # By point id, on the sparse vector: its own sparse vector is the query.
    by_id = client.query_points(name, query=5, using="text-sparse", limit=5).points
    assert 5 not in [int(p.id) for p in by_id]


def test_named_batch_upsert_vector_edits_and_sparse_only(client: QdrantClient) -> None:
    name = f"named-{uuid.uuid4().hex[:8]}"
    client.create_collection(name, vectors_config={
        "a": models.VectorParams(size=3, distance=models.Distance.DOT),
        "b": models.VectorParams(size=2, distance=models.Distance.EUCLID)},
        sparse_vectors_config={"s": models.SparseVectorParams()})
    try:
        client.upsert(name, models.Batch(ids=[1, 2], vectors={
            "a": [[1, 0, 0], [0, 1, 0]], "b": [[0, 0], [3, 4]]}))
        hits = client.query_points(name, query=[0.0, 0.0], using="b", limit=2).points
        assert [(int(h.id), h.score) for h in hits] == [(1, 0.0), (2, 5.0)]
        client.update_vectors(name, [models.PointVectors(id=1, vector={
            "s": models.SparseVector(indices=[4], values=[2.0]), "b": [6.0, 8.0]})])
        hits = client.query_points(name, query=[0.0, 0.0], using="b", limit=2).points
        assert [(int(h.id), h.score) for h in hits] == [(2, 5.0), (1, 10.0)]
        s = client.query_points(name, query=models.SparseVector(indices=[4], values=[1.5]),
                                using="s").points
        assert [(int(h.id), h.score) for h in s] == [(1, 3.0)]
        client.delete_vectors(name, ["s"], models.PointIdsList(points=[1]))
        assert client.query_points(name, query=models.SparseVector(indices=[4], values=[1.0]),
                                   using="s").points == []
        with pytest.raises(UnexpectedResponse) as bad:
            client.upsert(name, [models.PointStruct(id=3, vector={
                "a": [1.0, 2.0, 3.0], "zzz": [1.0]})])
        assert bad.value.status_code == 400 and b"no vector named 'zzz'" in bad.value.content
        assert client.count(name).count == 2
        # Named vectors are each optional, the primary one ("a") too.
        client.upsert(name, [models.PointStruct(id=3, vector={"b": [1.0, 2.0]})])
        (p3,) = client.retrieve(name, [3], with_vectors=True)
        assert p3.vector == {"b": [1.0, 2.0]}
        by_a = client.query_points(name, query=[1.0, 1.0, 1.0], using="a", limit=10).points
        assert sorted(int(h.id) for h in by_a) == [1, 2]
        lacking = models.Filter(must_not=[models.HasVectorCondition(has_vector="a")])
        assert client.count(name, count_filter=lacking).count == 1
        with pytest.raises(UnexpectedResponse) as bad:
            client.query_points(name, query=models.RecommendQuery(
                recommend=models.RecommendInput(positive=[3])), using="a")
        assert bad.value.status_code == 404
        client.delete_vectors(name, ["a"], models.PointIdsList(points=[2]))
        by_a = client.query_points(name, query=[1.0, 1.0, 1.0], using="a", limit=10).points
        assert [int(h.id) for h in by_a] == [1]
        matrix = client.search_matrix_pairs(name, sample=10, limit=1, using="a")
        assert matrix.pairs == []  # one point has "a": no pair
        client.update_vectors(name, [models.PointVectors(id=3, vector={"a": [0, 0, 1.0]})])
        by_a = client.query_points(name, query=[0.0, 0.0, 1.0], using="a", limit=10).points
        assert [int(h.id) for h in by_a] == [3, 1]
    finally:
        client.delete_collection(name)
    only = f"sparse-{uuid.uuid4().hex[:8]}"
    client.create_collection(only, vectors_config={}, sparse_vectors_config={
        "bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)})
    try:
        info = client.get_collection(only)
        assert info.config.params.vectors == {}
        client.upsert(only, [models.PointStruct(id=1, vector={
            "bm25": models.SparseVector(indices=[1, 2], values=[1.0, 1.0])})])
        assert len(client.query_points(only, query=models.SparseVector(
            indices=[2], values=[1.0]), using="bm25").points) == 1
    finally:
        client.delete_collection(only)


def test_bm25_documents_are_inferred_by_the_server(server: Any) -> None:
    client = QdrantClient(url=server.url, prefer_grpc=False, timeout=30, cloud_inference=True)
    name = f"docs-{uuid.uuid4().hex[:8]}"
    client.create_collection(name, vectors_config={}, sparse_vectors_config={
        "bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)})
    texts = ["the quick brown fox jumps", "a lazy dog sleeps all day",
             "brown bears and brown foxes", "stock prices fall on rate fears"]
    try:
        client.upsert(name, [models.PointStruct(id=i, vector={"bm25": models.Document(
            text=t, model="Qdrant/bm25")}) for i, t in enumerate(texts)])
        got = client.query_points(name, query=models.Document(text="brown fox",
                                                              model="Qdrant/bm25"),
                                  using="bm25", limit=4).points
        assert [int(p.id) for p in got][:2] == [0, 2]
        with pytest.raises(UnexpectedResponse) as bad:
            client.query_points(name, query=models.Document(text="x", model="some/model"),
                                using="bm25")
        assert bad.value.status_code == 400 and b"not available" in bad.value.content
    finally:
        client.delete_collection(name)
        client.close()


@pytest.mark.parametrize("vector", [
    {"s": {"indices": [1, 1], "values": [1.0, 1.0]}},
    {"s": {"indices": [1], "values": [1e39]}},  # past float32
    {"s": {"indices": [-1], "values": [1.0]}},
    {"s": {"indices": [1], "values": [1.0], "extra": 1}},
    {"d": [[1.0, 2.0], [3.0, 4.0]]},
])
def test_bad_named_vectors_are_a_400_and_write_nothing(client: QdrantClient, server: Any,
                                                       vector: dict[str, Any]) -> None:
    import httpx

    name = f"bad-{uuid.uuid4().hex[:8]}"
    client.create_collection(name, vectors_config={"d": models.VectorParams(
        size=2, distance=models.Distance.DOT)}, sparse_vectors_config={
        "s": models.SparseVectorParams()})
    try:
        body = {"points": [{"id": 1, "vector": {"d": [1.0, 1.0]}},
                           {"id": 2, "vector": {"d": [1.0, 1.0], **vector}}]}
        r = httpx.put(f"{server.url}/collections/{name}/points", json=body)
        assert r.status_code in (400, 422), r.text
        assert client.count(name).count == 0
    finally:
        client.delete_collection(name)


def test_update_filter_and_update_mode_over_rest(client: QdrantClient, server: Any) -> None:
    import httpx

    name = f"cond-{uuid.uuid4().hex[:8]}"
    client.create_collection(name, vectors_config=models.VectorParams(
        size=2, distance=models.Distance.DOT))
    url = f"{server.url}/collections/{name}/points"
    try:
        client.upsert(name, [models.PointStruct(id=i, vector=[1.0, 0.0],
                                                payload={"v": 1, "lock": i == 2})
                             for i in (1, 2)])
        r = httpx.put(url, json={"points": [{"id": i, "vector": [0.0, 1.0], "payload": {"v": 2}}
                                            for i in (1, 2, 3)],
                                 "update_filter": {"must": [{"key": "lock",
                                                             "match": {"value": False}}]}})
        assert r.status_code == 200, r.text
        got = {int(p.id): p.payload["v"] for p in client.retrieve(name, [1, 2, 3])}
        assert got == {1: 2, 2: 1, 3: 2}
        r = httpx.put(url, json={"points": [{"id": 4, "vector": [1.0, 1.0]}],
                                 "update_mode": "update_only"})
        assert r.status_code == 200 and client.count(name).count == 3
        r = httpx.put(url, json={"points": [{"id": 1, "vector": [1.0, 1.0]}],
                                 "update_mode": "sometimes"})
        assert r.status_code in (400, 422)
    finally:
        client.delete_collection(name)


def test_batch_update_points_applies_all_or_nothing(client: QdrantClient, server: Any) -> None:
    import httpx

    name = f"batch-{uuid.uuid4().hex[:8]}"
    client.create_collection(name, vectors_config={
        "d": models.VectorParams(size=2, distance=models.Distance.DOT)},
        sparse_vectors_config={"s": models.SparseVectorParams()})
    try:
        client.upsert(name, [models.PointStruct(id=i, vector={"d": [1.0, float(i)]},
                                                payload={"i": i}) for i in range(5)])
        client.batch_update_points(name, [
            models.UpsertOperation(upsert=models.PointsList(points=[models.PointStruct(
                id=10, vector={"d": [0.0, 1.0], "s": models.SparseVector(indices=[3],
                                                                       values=[1.0])})])),
            models.SetPayloadOperation(set_payload=models.SetPayload(
                payload={"tag": "t"}, points=[10, 1])),
            models.OverwritePayloadOperation(overwrite_payload=models.SetPayload(
                payload={"only": True}, points=[2])),
            models.DeletePayloadOperation(delete_payload=models.DeletePayload(
                keys=["i"], points=[1])),
            models.ClearPayloadOperation(clear_payload=models.PointIdsList(points=[3])),
            models.DeleteOperation(delete=models.FilterSelector(filter=models.Filter(must=[
                models.FieldCondition(key="i", match=models.MatchValue(value=4))]))),
            models.UpdateVectorsOperation(update_vectors=models.UpdateVectors(points=[
                models.PointVectors(id=0, vector={"s": models.SparseVector(indices=[3],
                                                                           values=[2.0])})])),
            models.DeleteVectorsOperation(delete_vectors=models.DeleteVectors(
                points=[10], vector=["s"])),
        ])
        got = {int(r.id): r.payload for r in client.retrieve(name, [0, 1, 2, 3, 4, 10])}
        assert got == {0: {"i": 0}, 1: {"tag": "t"}, 2: {"only": True}, 3: {}, 10: {"tag": "t"}}
        hits = client.query_points(name, query=models.SparseVector(indices=[3], values=[1.0]),
                                   using="s").points
        assert [(int(h.id), h.score) for h in hits] == [(0, 2.0)]
        # One bad operation: nothing of the batch is written.
        r = httpx.post(f"{server.url}/collections/{name}/points/batch", json={"operations": [
            {"delete": {"points": [0, 1]}},
            {"upsert": {"points": [{"id": 20, "vector": {"d": [1.0, 2.0, 3.0]}}]}}]})
        assert r.status_code == 400, r.text
        assert client.count(name).count == 5
        assert {int(r.id) for r in client.retrieve(name, [0, 1, 20])} == {0, 1}
    finally:
        client.delete_collection(name)


def test_full_text_index_through_qdrant_client(client: QdrantClient, server: Any) -> None:
    import httpx

    name = f"text-{uuid.uuid4().hex[:8]}"
    client.create_collection(name, vectors_config=models.VectorParams(
        size=2, distance=models.Distance.DOT))
    try:
        texts = ["red apple pie", "green apple", "apple red", "banana bread"]
        client.upsert(name, [models.PointStruct(id=i, vector=[1.0, 0.0], payload={"t": t})
                             for i, t in enumerate(texts)])
        client.create_payload_index(name, "t", models.TextIndexParams(
            type=models.TextIndexType.TEXT, tokenizer=models.TokenizerType.WORD,
            lowercase=True, phrase_matching=True))
        info = client.get_collection(name)
        assert info.payload_schema["t"].data_type == models.PayloadSchemaType.TEXT

        def ids(match: Any) -> set[int]:
            points, _ = client.scroll(name, scroll_filter=models.Filter(must=[
                models.FieldCondition(key="t", match=match)]), limit=10)
            return {int(p.id) for p in points}

        assert ids(models.MatchText(text="apple red")) == {0, 2}
        assert ids(models.MatchPhrase(phrase="red apple")) == {0}
        # qdrant-client 1.15 has no MatchTextAny yet: the body it would send.
        r = httpx.post(f"{server.url}/collections/{name}/points/scroll", json={
            "filter": {"must": [{"key": "t", "match": {"text_any": "banana green"}}]}})
        assert {p["id"] for p in r.json()["result"]["points"]} == {1, 3}
    finally:
        client.delete_collection(name)


def test_nested_filter_through_qdrant_client(client: QdrantClient) -> None:
    name = f"nested-{uuid.uuid4().hex[:8]}"
    client.create_collection(name, vectors_config=models.VectorParams(
        size=2, distance=models.Distance.DOT))
    try:
        client.upsert(name, [
            models.PointStruct(id=1, vector=[1.0, 0.0], payload={"diet": [
                {"food": "meat", "likes": False}, {"food": "fish", "likes": True}]}),
            models.PointStruct(id=2, vector=[1.0, 0.0], payload={"diet": [
                {"food": "meat", "likes": True}]})])
        flt = models.Filter(must=[models.NestedCondition(nested=models.Nested(
            key="diet", filter=models.Filter(must=[
                models.FieldCondition(key="food", match=models.MatchValue(value="meat")),
                models.FieldCondition(key="likes", match=models.MatchValue(value=True))])))])
        points, _ = client.scroll(name, scroll_filter=flt)
        assert [int(p.id) for p in points] == [2]
    finally:
        client.delete_collection(name)


def test_multivector_rerank_through_qdrant_client(client: QdrantClient) -> None:
    """ColBERT-style: prefetch by the dense vector, rerank by MaxSim."""
    rng = np.random.default_rng(4)
    name = f"colbert-{uuid.uuid4().hex[:8]}"
    client.create_collection(name, vectors_config={
        "dense": models.VectorParams(size=4, distance=models.Distance.COSINE),
        "colbert": models.VectorParams(size=3, distance=models.Distance.DOT,
                                       multivector_config=models.MultiVectorConfig(
                                           comparator=models.MultiVectorComparator.MAX_SIM))})
    try:
        dense = rng.normal(size=(60, 4))
        mats = [rng.normal(size=(int(rng.integers(1, 5)), 3)) for _ in range(60)]
        client.upsert(name, [models.PointStruct(id=i, vector={
            "dense": dense[i].tolist(), "colbert": mats[i].tolist()}) for i in range(60)])
        info = client.get_collection(name)
        assert info.config.params.vectors["colbert"].multivector_config is not None
        qd, qm = rng.normal(size=4), rng.normal(size=(2, 3))
        got = client.query_points(name, prefetch=models.Prefetch(
            query=qd.tolist(), using="dense", limit=20), query=qm.tolist(), using="colbert",
            limit=5).points
        unit = dense / np.linalg.norm(dense, axis=1, keepdims=True)
        top20 = np.argsort(-(unit @ (qd / np.linalg.norm(qd))))[:20]
        sims = {int(i): float((qm @ mats[i].T).max(axis=1).sum()) for i in top20}
        best = sorted(sims.items(), key=lambda kv: -kv[1])[:5]
        assert [int(p.id) for p in got] == [i for i, _ in best]
        assert [p.score for p in got] == pytest.approx([s for _, s in best], rel=1e-4)
    finally:
        client.delete_collection(name)


def test_formula_rescoring_through_qdrant_client(client: QdrantClient) -> None:
    """$score, payload values with defaults, a condition, decays and geo distance,
    against the same arithmetic in plain Python."""
    import math

    name = f"formula-{uuid.uuid4().hex[:8]}"
    client.create_collection(name, vectors_config=models.VectorParams(
        size=2, distance=models.Distance.DOT))
    rng = np.random.default_rng(8)
    try:
        vecs = rng.normal(size=(40, 2))
        payloads: list[dict[str, Any]] = []
        for i in range(40):
            p: dict[str, Any] = {"tag": "hot" if i % 3 == 0 else "cold",
                                 "at": {"lat": 52.0 + i * 0.01, "lon": 13.0}}
            if i % 4:
                p["boost"] = float(i % 5)
            payloads.append(p)
        client.upsert(name, [models.PointStruct(id=i, vector=vecs[i].tolist(),
                                                payload=payloads[i]) for i in range(40)])
        q = [1.0, 0.5]
        got = client.query_points(name, prefetch=models.Prefetch(query=q, limit=25),
                                  query=models.FormulaQuery(formula=models.SumExpression(sum=[
                                      "$score",
                                      models.MultExpression(mult=[0.5, "boost"]),
                                      models.MultExpression(mult=[2.0, models.FieldCondition(
                                          key="tag", match=models.MatchValue(value="hot"))]),
                                      models.ExpDecayExpression(exp_decay=models.DecayParamsExpression(
                                          x=models.GeoDistance(geo_distance=models.GeoDistanceParams(
                                              origin=models.GeoPoint(lat=52.0, lon=13.0),
                                              to="at")),
                                          scale=5000.0)),
                                  ]), defaults={"boost": 10.0}), limit=10).points
        scores = vecs @ np.array(q)
        top25 = np.argsort(-scores)[:25]

        def haversine(lat: float, lon: float) -> float:
            p1, p2 = math.radians(52.0), math.radians(lat)
            h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(
                math.radians(lon - 13.0) / 2) ** 2
            return 2 * 6_371_008.8 * math.asin(math.sqrt(h))

        def value(i: int) -> float:
            p = payloads[i]
            d = haversine(p["at"]["lat"], p["at"]["lon"])
            return (float(scores[i]) + 0.5 * p.get("boost", 10.0)
                    + 2.0 * (p["tag"] == "hot") + math.exp(math.log(0.5) * d / 5000.0))

        expect = sorted((value(int(i)) for i in top25), reverse=True)[:10]
        assert [p.score for p in got] == pytest.approx(expect, rel=1e-5)
        for p in got:
            assert value(int(p.id)) == pytest.approx(p.score, rel=1e-5)
        # A payload value missing with no default is a clear 400.
        with pytest.raises(UnexpectedResponse) as bad:
            client.query_points(name, prefetch=models.Prefetch(query=q, limit=25),
                                query=models.FormulaQuery(formula="boost"))
        assert bad.value.status_code == 400 and b"defaults give none" in bad.value.content
    finally:
        client.delete_collection(name)


def test_storage_snapshots_and_telemetry(client: QdrantClient, server: Any,
                                         tmp_path: Any) -> None:
    import tarfile

    import httpx

    name = f"full-{uuid.uuid4().hex[:8]}"
    client.create_collection(name, vectors_config=models.VectorParams(
        size=2, distance=models.Distance.DOT))
    try:
        client.upsert(name, [models.PointStruct(id=1, vector=[1.0, 2.0], payload={"a": 1})])
        client.update_collection_aliases([models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name=name, alias_name=f"{name}-a"))])
        info = client.create_full_snapshot()
        assert info is not None and info.name.endswith(".snapshot")
        assert info.name in [s.name for s in client.list_full_snapshots()]
        r = httpx.get(f"{server.url}/snapshots/{info.name}", timeout=30)
        assert r.status_code == 200
        archive = tmp_path / "full.tar"
        archive.write_bytes(r.content)
        with tarfile.open(archive) as tar:
            names = tar.getnames()
            assert f"{name}.snapshot" in names and "aliases.json" in names
            tar.extract(f"{name}.snapshot", tmp_path, filter="data")
        # A collection inside it recovers through the collection snapshot API.
        with (tmp_path / f"{name}.snapshot").open("rb") as f:
            r = httpx.post(f"{server.url}/collections/{name}-copy/snapshots/upload",
                           files={"snapshot": f}, timeout=30)
        assert r.status_code == 200, r.text
        assert client.count(f"{name}-copy").count == 1
        client.delete_collection(f"{name}-copy")
        assert client.delete_full_snapshot(info.name)
        assert info.name not in [s.name for s in client.list_full_snapshots()]
        telemetry = httpx.get(f"{server.url}/telemetry", timeout=10).json()["result"]
        assert telemetry["app"]["name"] == "peregrine"
        ours = [c for c in telemetry["collections"]["collections"] if c["id"] == name]
        assert ours and ours[0]["points"] == 1
    finally:
        client.delete_collection(name)


def test_cluster_routes_answer_as_one_node(client: QdrantClient, server: Any) -> None:
    import httpx

    name = f"cl-{uuid.uuid4().hex[:8]}"
    client.create_collection(name, vectors_config=models.VectorParams(
        size=2, distance=models.Distance.DOT))
    try:
        client.upsert(name, [models.PointStruct(id=1, vector=[1.0, 2.0])])
        assert httpx.get(f"{server.url}/cluster").json()["result"] == {"status": "disabled"}
        info = client.http.distributed_api.collection_cluster_info(name).result
        assert info is not None and info.shard_count == 1
        assert info.local_shards[0].points_count == 1
        r = httpx.put(f"{server.url}/collections/{name}/shards", json={"shard_key": "a"})
        assert r.status_code == 400 and "one node" in r.json()["status"]["error"]
    finally:
        client.delete_collection(name)


def test_manhattan_distance_through_qdrant_client(client: QdrantClient) -> None:
    name = f"l1-{uuid.uuid4().hex[:8]}"
    client.create_collection(name, vectors_config=models.VectorParams(
        size=3, distance=models.Distance.MANHATTAN))
    try:
        rng = np.random.default_rng(2)
        vecs = rng.normal(size=(50, 3)).astype(np.float32)
        client.upsert(name, [models.PointStruct(id=i, vector=vecs[i].tolist())
                             for i in range(50)])
        q = rng.normal(size=3).astype(np.float32)
        got = client.query_points(name, query=q.tolist(), limit=5).points
        dist = np.abs(vecs - q).sum(axis=1)
        assert [int(p.id) for p in got] == np.argsort(dist)[:5].tolist()
        assert [p.score for p in got] == pytest.approx(np.sort(dist)[:5].tolist(), rel=1e-5)
        info = client.get_collection(name)
        assert info.config.params.vectors.distance == models.Distance.MANHATTAN
        with pytest.raises(UnexpectedResponse) as bad:
            client.update_collection(name, quantization_config=models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8)))
        assert bad.value.status_code == 400
    finally:
        client.delete_collection(name)


def test_a_formula_stage_fuses_as_a_similarity(client: QdrantClient, server: Any) -> None:
    """On a Euclid collection a formula's values are still higher-is-better."""
    import httpx

    name = f"fdir-{uuid.uuid4().hex[:8]}"
    client.create_collection(name, vectors_config={"d": models.VectorParams(
        size=2, distance=models.Distance.EUCLID)})
    try:
        client.upsert(name, [models.PointStruct(id=i, vector={"d": [float(i), 0.0]},
                                                payload={"x": i}) for i in range(1, 7)])
        stage = {"prefetch": [{"query": [0.0, 0.0], "using": "d", "limit": 6}],
                 "query": {"formula": "x"}, "limit": 6}
        for fusion in ("dbsf", "rrf"):
            r = httpx.post(f"{server.url}/collections/{name}/points/query", json={
                "prefetch": [stage], "query": {"fusion": fusion}, "limit": 3})
            assert [p["id"] for p in r.json()["result"]["points"]] == [6, 5, 4], fusion
    finally:
        client.delete_collection(name)


def test_datatypes_through_qdrant_client(client: QdrantClient) -> None:
    name = f"dt-{uuid.uuid4().hex[:8]}"
    client.create_collection(name, vectors_config={
        "main": models.VectorParams(size=2, distance=models.Distance.DOT,
                                    datatype=models.Datatype.FLOAT16),
        "codes": models.VectorParams(size=2, distance=models.Distance.EUCLID,
                                     datatype=models.Datatype.UINT8)})
    try:
        client.upsert(name, [models.PointStruct(id=i, vector={"main": [1.0, 0.5],
                                                                "codes": [i, 255 - i]})
                             for i in range(10)])
        hits = client.query_points(name, query=[3.0, 250.0], using="codes", limit=2).points
        assert [int(h.id) for h in hits] == [4, 3]
        info = client.get_collection(name)
        assert info.config.params.vectors["codes"].datatype == models.Datatype.UINT8
        with pytest.raises(UnexpectedResponse) as bad:
            client.upsert(name, [models.PointStruct(id=20, vector={"main": [1.0, 0.0],
                                                                  "codes": [0.5, 300]})])
        assert bad.value.status_code == 400
    finally:
        client.delete_collection(name)
    with pytest.raises(UnexpectedResponse) as bad:
        client.create_collection(name, vectors_config=models.VectorParams(
            size=2, distance=models.Distance.DOT, datatype=models.Datatype.UINT8))
    assert bad.value.status_code == 400


def test_named_vectors_keep_their_own_hnsw_and_quantization() -> None:
    """A named vector's hnsw_config (m, ef_construct) and int8 quantization reach
    the engine's spec, which its graphs in sealed segments are built with."""
    from peregrine.edge.qdrant import schemas
    from peregrine.edge.qdrant.layout import layout
    from peregrine.vector.types import Quantization

    body = schemas.CreateCollection.model_validate({"vectors": {
        "text": {"size": 4, "distance": "Cosine"},
        "image": {"size": 8, "distance": "Euclid", "hnsw_config": {"m": 8, "ef_construct": 40},
                  "quantization_config": {"scalar": {"type": "int8"}}}}})
    shape = layout(body)
    assert shape.vector_name == "text"
    image = shape.named["image"]
    assert (image.m, image.ef_construction, image.quantization) == (8, 40, Quantization.INT8)


def test_payload_index_parameters_are_kept_and_read_back(client: QdrantClient,
                                                         server: Any) -> None:
    """Integer lookup/range, is_tenant and is_principal are accepted, kept and
    reported in payload_schema (one sorted index serves lookups and ranges here);
    is_tenant and is_principal become the engine's storage layout
    (tests/vector/test_layout.py); an unknown parameter is a 400; dropping the
    index forgets them."""
    name = f"hints-{uuid.uuid4().hex[:8]}"
    client.create_collection(name, vectors_config=models.VectorParams(
        size=2, distance=models.Distance.DOT))
    try:
        client.upsert(name, [models.PointStruct(id=i, vector=[1.0, float(i)], payload={
            "n": i, "tenant": "ab"[i % 2]}) for i in range(6)])
        client.create_payload_index(name, "n", models.IntegerIndexParams(
            type=models.IntegerIndexType.INTEGER, lookup=False, range=True, is_principal=True))
        client.create_payload_index(name, "tenant", models.KeywordIndexParams(
            type=models.KeywordIndexType.KEYWORD, is_tenant=True))
        schema = client.get_collection(name).payload_schema
        assert schema["n"].params is not None and schema["n"].params.lookup is False
        assert schema["n"].params.is_principal is True and schema["n"].points == 6
        assert schema["tenant"].params is not None and schema["tenant"].params.is_tenant is True
        import json

        stored = json.loads((server.data / "collections" / name / "config.json").read_text())
        assert stored["layout"] == {"n": "principal", "tenant": "tenant"}
        # Answers are the same whatever the hints say.
        flt = models.Filter(must=[models.FieldCondition(key="n", match=models.MatchValue(
            value=3)), models.FieldCondition(key="tenant", match=models.MatchValue(value="b"))])
        assert [p.id for p in client.scroll(name, scroll_filter=flt)[0]] == [3]
        import httpx

        r = httpx.put(f"{server.url}/collections/{name}/index", json={
            "field_name": "x", "field_schema": {"type": "keyword", "lookup": True}})
        assert r.status_code == 400 and "takes no 'lookup'" in r.text
        client.delete_payload_index(name, "tenant")
        client.create_payload_index(name, "tenant", "keyword")
        assert client.get_collection(name).payload_schema["tenant"].params is None
        stored = json.loads((server.data / "collections" / name / "config.json").read_text())
        assert stored["layout"] == {"n": "principal"}
        # Concurrent creations (and a PATCH among them) keep every index's parameters.
        from concurrent.futures import ThreadPoolExecutor

        def create(i: int) -> None:
            client.create_payload_index(name, f"f{i}", models.IntegerIndexParams(
                type=models.IntegerIndexType.INTEGER, lookup=bool(i % 2), range=True))
            if i == 5:
                client.update_collection(name, hnsw_config=models.HnswConfigDiff(ef_construct=64))

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(24)))
        schema = client.get_collection(name).payload_schema
        assert all(schema[f"f{i}"].params.lookup is bool(i % 2)  # type: ignore[union-attr]
                   for i in range(24))
    finally:
        client.delete_collection(name)


def test_patch_changes_a_named_vectors_graph_settings() -> None:
    """PATCH vectors.{name}.hnsw_config / quantization_config of a named vector
    other than the primary become engine graph settings (the primary's go to the
    collection index; a multivector has no graph)."""
    from peregrine.edge.qdrant import schemas
    from peregrine.edge.qdrant.convert import named_updates
    from peregrine.vector.types import CollectionConfig, DenseSpec, Metric, Quantization

    config = CollectionConfig("c", 4, Metric.COSINE, vector_name="text", named={
        "image": DenseSpec(8, Metric.L2), "colbert": DenseSpec(8, Metric.DOT, multi=True)})
    body = schemas.UpdateCollection.model_validate({"vectors": {
        "text": {"hnsw_config": {"m": 32}},
        "image": {"hnsw_config": {"m": 8, "ef_construct": 40},
                  "quantization_config": {"scalar": {"type": "int8"}}},
        "colbert": {"hnsw_config": {"m": 8}}}})
    assert named_updates(body, config) == {
        "image": {"m": 8, "ef_construction": 40, "quantization": Quantization.INT8}}
    off = schemas.UpdateCollection.model_validate(
        {"vectors": {"image": {"quantization_config": "Disabled"}}})
    assert named_updates(off, config) == {"image": {"quantization": Quantization.NONE}}


def test_named_vectors_take_the_collections_settings_not_the_primarys() -> None:
    """A named vector without its own hnsw_config / quantization_config takes the
    collection-level ones (else Qdrant's defaults), never the primary vector's
    own; a later PATCH of the collection-level settings reaches it too, but not
    a vector that set its own."""
    from peregrine.edge.qdrant import schemas
    from peregrine.edge.qdrant.convert import PROTOCOL, declared, named_updates
    from peregrine.edge.qdrant.layout import layout
    from peregrine.vector.types import CollectionConfig, Metric, Quantization

    body = schemas.CreateCollection.model_validate({
        "vectors": {"text": {"size": 4, "distance": "Cosine", "hnsw_config": {"m": 32}},
                    "image": {"size": 4, "distance": "Dot"},
                    "own": {"size": 4, "distance": "Dot", "hnsw_config": {"m": 24},
                            "quantization_config": {"scalar": {"type": "int8"}}}},
        "hnsw_config": {"ef_construct": 50},
        "quantization_config": {"scalar": {"type": "int8"}}})
    shape = layout(body)
    image, own = shape.named["image"], shape.named["own"]
    assert (image.m, image.ef_construction, image.quantization) == (16, 50, Quantization.INT8)
    assert (own.m, own.ef_construction, own.quantization) == (24, 50, Quantization.INT8)
    plain = layout(schemas.CreateCollection.model_validate({"vectors": {
        "text": {"size": 4, "distance": "Cosine", "hnsw_config": {"m": 32}},
        "image": {"size": 4, "distance": "Dot"}}}))
    assert (plain.named["image"].m, plain.named["image"].quantization) == (16,
                                                                           Quantization.NONE)

    config = CollectionConfig("c", 4, Metric.COSINE, vector_name="text", named=shape.named,
                              declared={PROTOCOL: declared(body)})
    patch = schemas.UpdateCollection.model_validate(
        {"hnsw_config": {"m": 12}, "quantization_config": "Disabled"})
    assert named_updates(patch, config) == {
        "image": {"m": 12, "quantization": Quantization.NONE}}


def test_hnsw_m_zero_means_no_graph_for_a_named_vector(client: QdrantClient) -> None:
    """Qdrant's rerank-only layout (``hnsw_config: {m: 0}`` on a multivector or a
    named vector) is accepted: that vector gets no graph and is scanned exactly.
    The primary vector needs its graph: m 0 there is a 400 that says so."""
    name = f"m0-{uuid.uuid4().hex[:8]}"
    client.create_collection(name, vectors_config={
        "dense": models.VectorParams(size=2, distance=models.Distance.DOT),
        "rerank": models.VectorParams(size=2, distance=models.Distance.DOT,
                                      hnsw_config=models.HnswConfigDiff(m=0)),
        "colbert": models.VectorParams(
            size=2, distance=models.Distance.DOT, hnsw_config=models.HnswConfigDiff(m=0),
            multivector_config=models.MultiVectorConfig(
                comparator=models.MultiVectorComparator.MAX_SIM))})
    try:
        client.upsert(name, [models.PointStruct(id=i, vector={
            "dense": [1.0, float(i)], "rerank": [float(i), 1.0],
            "colbert": [[1.0, float(i)], [0.0, 1.0]]}) for i in range(5)])
        hits = client.query_points(name, query=[1.0, 0.0], using="rerank", limit=2).points
        assert [int(h.id) for h in hits] == [4, 3]
        info = client.get_collection(name).config.params.vectors
        assert info["rerank"].hnsw_config.m == 0  # type: ignore[index,union-attr]
    finally:
        client.delete_collection(name)
    with pytest.raises(UnexpectedResponse) as bad:
        client.create_collection(f"m0p-{uuid.uuid4().hex[:8]}", vectors_config=models.VectorParams(
            size=2, distance=models.Distance.DOT, hnsw_config=models.HnswConfigDiff(m=0)))
    assert bad.value.status_code == 400
