"""Grouped search (``search/groups``, ``query/groups``, ``with_lookup``) through
the official qdrant-client, against grouping numpy's exact ranking."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from apiutil import ServerProcess
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

DIM, N, DOCS = 8, 600, 40


@pytest.fixture(scope="module")
def chunks(client: QdrantClient) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """600 chunks of 40 documents (Zipf-sized), a few in two documents, a few in
    none; and a ``documents`` collection keyed by document id."""
    rng = np.random.default_rng(11)
    vecs = rng.standard_normal((N, DIM)).astype(np.float32)
    payloads: list[dict[str, Any]] = []
    for i in range(N):
        doc = int(rng.zipf(1.5)) % DOCS
        p: dict[str, Any] = {"doc": doc, "i": i}
        if i % 50 == 7:
            p["doc"] = [doc, (doc + 1) % DOCS]
        if i % 60 == 11:
            del p["doc"]
        payloads.append(p)
    client.create_collection("chunks", vectors_config=models.VectorParams(
        size=DIM, distance=models.Distance.DOT))
    client.upsert("chunks", points=[models.PointStruct(id=i, vector=vecs[i].tolist(),
                                                       payload=payloads[i])
                                    for i in range(N)], wait=True)
    client.create_collection("documents", vectors_config=models.VectorParams(
        size=2, distance=models.Distance.DOT))
    client.upsert("documents", points=[models.PointStruct(id=d, vector=[1.0, 0.0],
                                                          payload={"title": f"doc {d}"})
                                       for d in range(DOCS) if d != 3], wait=True)
    return vecs, payloads


def oracle(vecs: np.ndarray, payloads: list[dict[str, Any]], q: np.ndarray, limit: int,
           size: int, skip: int | None = None) -> list[tuple[int, list[int]]]:
    order = np.argsort(-(vecs @ q), kind="stable")
    groups: dict[int, list[int]] = {}
    for i in order.tolist():
        if i == skip:
            continue
        raw = payloads[i].get("doc")
        for d in dict.fromkeys(raw if isinstance(raw, list) else [raw]):
            if d is None:
                continue
            members = groups.setdefault(d, [])
            if len(members) < size:
                members.append(i)
    return list(groups.items())[:limit]


EXACT = models.SearchParams(exact=True)


def test_search_groups_are_the_best_documents_with_their_best_chunks(
        client: QdrantClient, chunks: tuple[np.ndarray, list[dict[str, Any]]]) -> None:
    vecs, payloads = chunks
    rng = np.random.default_rng(2)
    for limit, size in ((5, 3), (10, 1), (3, 8), (40, 2)):
        q = rng.standard_normal(DIM).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            res = client.search_groups("chunks", q.tolist(), group_by="doc", limit=limit,
                                       group_size=size, search_params=EXACT)
        got = [(g.id, [h.id for h in g.hits]) for g in res.groups]
        assert got == oracle(vecs, payloads, q, limit, size)
        for g in res.groups:  # scores are the dot products, best first
            scores = [h.score for h in g.hits]
            assert scores == sorted(scores, reverse=True)
            assert np.allclose(scores, [float(vecs[h.id] @ q) for h in g.hits], atol=1e-4)


def test_query_groups_by_point_with_lookup_and_payload_selection(
        client: QdrantClient, chunks: tuple[np.ndarray, list[dict[str, Any]]]) -> None:
    vecs, payloads = chunks
    res = client.query_points_groups(
        "chunks", group_by="doc", query=17, limit=6, group_size=2, search_params=EXACT,
        with_payload=["i"], with_lookup=models.WithLookup(collection="documents",
                                                          with_payload=["title"]))
    got = [(g.id, [h.id for h in g.hits]) for g in res.groups]
    assert got == oracle(vecs, payloads, vecs[17], 6, 2, skip=17)  # not itself
    for g in res.groups:
        assert all(h.payload == {"i": h.id} for h in g.hits)
        if g.id == 3:
            assert g.lookup is None  # no such document
        else:
            assert g.lookup is not None and g.lookup.payload == {"title": f"doc {g.id}"}
    filtered = client.query_points_groups(
        "chunks", group_by="doc", query=vecs[0].tolist(), limit=50, group_size=50,
        query_filter=models.Filter(must=[models.FieldCondition(
            key="doc", match=models.MatchAny(any=[1, 2]))]), search_params=EXACT)
    assert {g.id for g in filtered.groups} <= {0, 1, 2, 3}  # multi-doc chunks bring a neighbour
    assert {1, 2} <= {g.id for g in filtered.groups}


def test_groups_refuse_what_they_cannot_do(client: QdrantClient,
                                           chunks: tuple[np.ndarray, Any]) -> None:
    with pytest.raises(UnexpectedResponse) as exc:
        client.query_points_groups("chunks", group_by="doc", query=[0.0] * DIM,
                                   limit=1000, group_size=1000)
    assert exc.value.status_code == 400 and "max_limit" in str(exc.value)
    with pytest.raises(UnexpectedResponse) as exc:
        client.query_points_groups("chunks", group_by="doc", query=[0.0] * DIM,
                                   with_lookup="nowhere")
    assert exc.value.status_code == 404
    with pytest.raises(UnexpectedResponse) as exc:
        client.query_points_groups("chunks", group_by="", query=[0.0] * DIM)
    assert exc.value.status_code in (400, 422)


def test_distance_matrix_of_a_sample_as_pairs_and_offsets(
        client: QdrantClient, chunks: tuple[np.ndarray, list[dict[str, Any]]]) -> None:
    vecs, payloads = chunks
    res = client.search_matrix_pairs("chunks", sample=30, limit=4)
    sampled = sorted({p.a for p in res.pairs})
    assert len(sampled) == 30 and len(res.pairs) == 30 * 4
    for a in sampled:  # each one's 4 nearest among the sample, best first
        mine = [p for p in res.pairs if p.a == a]
        others = [i for i in sampled if i != a]
        scores = vecs[others] @ vecs[a]
        want = [others[j] for j in np.argsort(-scores, kind="stable")[:4]]
        assert [p.b for p in mine] == want
        assert np.allclose([p.score for p in mine], sorted(scores, reverse=True)[:4],
                           atol=1e-4)
    flt = models.Filter(must=[models.FieldCondition(key="doc",
                                                    match=models.MatchValue(value=0))])
    off = client.search_matrix_offsets("chunks", query_filter=flt, sample=1000, limit=2)
    in_doc = [i for i, p in enumerate(payloads) if p.get("doc") == 0
              or (isinstance(p.get("doc"), list) and 0 in p["doc"])]
    assert sorted(off.ids) == in_doc  # fewer than the sample: all of them
    assert len(off.offsets_row) == len(off.offsets_col) == len(off.scores) == 2 * len(in_doc)
    assert all(r != c for r, c in zip(off.offsets_row, off.offsets_col, strict=True))
    with pytest.raises(UnexpectedResponse) as exc:
        client.search_matrix_pairs("chunks", sample=10**7)
    assert exc.value.status_code in (400, 422)


def test_update_collection_changes_settings_and_keeps_the_points(
        client: QdrantClient, server: ServerProcess,
        chunks: tuple[np.ndarray, list[dict[str, Any]]]) -> None:
    import httpx

    assert client.update_collection(
        "chunks", hnsw_config=models.HnswConfigDiff(m=24, ef_construct=200),
        optimizers_config=models.OptimizersConfigDiff(indexing_threshold=5000),
        quantization_config=models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
            type=models.ScalarType.INT8, quantile=0.99)))
    # qdrant-client 1.15 cannot send metadata yet: the body it would send.
    r = httpx.patch(f"{server.url}/collections/chunks",
                    json={"metadata": {"owner": "search", "team": "rag"}}, timeout=10)
    assert r.status_code == 200, r.text
    info = client.get_collection("chunks")
    assert info.config.hnsw_config.m == 24 and info.config.hnsw_config.ef_construct == 200
    assert info.config.optimizer_config.indexing_threshold == 5000
    assert info.config.quantization_config is not None
    raw = httpx.get(f"{server.url}/collections/chunks", timeout=10).json()["result"]
    assert raw["config"]["metadata"] == {"owner": "search", "team": "rag"}
    assert info.points_count == N
    client.update_collection("chunks", quantization_config=models.Disabled.DISABLED)
    httpx.patch(f"{server.url}/collections/chunks", json={"metadata": {"team": None}},
                timeout=10)
    info = client.get_collection("chunks")
    assert info.config.quantization_config is None
    raw = httpx.get(f"{server.url}/collections/chunks", timeout=10).json()["result"]
    assert raw["config"]["metadata"] == {"owner": "search"}
    assert info.config.hnsw_config.m == 24  # kept
    with pytest.raises(UnexpectedResponse) as exc:
        client.update_collection("chunks", vectors_config={"other": models.VectorParamsDiff(
            on_disk=True)})
    assert exc.value.status_code in (400, 422)
