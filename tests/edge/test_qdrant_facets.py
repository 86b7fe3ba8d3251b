"""Facets (``POST /collections/{c}/facet``) through the official qdrant-client,
against counts computed from the points' payloads."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from apiutil import ServerProcess
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

N = 400


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("facets") / "data")
    yield s
    assert s.stop() == 0
    assert not s.server_errors(), s.server_errors()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[QdrantClient]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = QdrantClient(url=server.url, prefer_grpc=False, timeout=30)
    yield c
    c.close()


@pytest.fixture(scope="module")
def docs(client: QdrantClient) -> dict[int, dict[str, Any]]:
    """400 points with a source (sometimes two, sometimes a number, sometimes
    none), a year and a flag; then 40 deleted and 40 overwritten."""
    rng = np.random.default_rng(5)
    sources = ["news", "blog", "wiki", "forum", "mail"]
    client.create_collection("docs", vectors_config=models.VectorParams(
        size=4, distance=models.Distance.DOT))
    for field, kind in (("source", models.PayloadSchemaType.KEYWORD),
                        ("year", models.PayloadSchemaType.INTEGER),
                        ("flag", models.PayloadSchemaType.BOOL)):
        client.create_payload_index("docs", field, kind, wait=True)

    def payload(i: int) -> dict[str, Any]:
        p: dict[str, Any] = {"year": int(rng.integers(2015, 2025)),
                             "flag": bool(rng.random() < 0.3)}
        r = rng.random()
        if r < 0.7:
            p["source"] = sources[int(rng.zipf(1.6)) % 5]
        elif r < 0.85:
            p["source"] = [sources[int(rng.integers(5))], sources[int(rng.integers(5))]]
        elif r < 0.95:
            p["source"] = 7  # a number: not a keyword
        return p

    state = {i: payload(i) for i in range(N)}
    client.upsert("docs", points=[models.PointStruct(id=i, vector=[1.0, 0, 0, 0],
                                                     payload=p) for i, p in state.items()],
                  wait=True)
    gone = list(range(0, N, 10))
    client.delete("docs", points_selector=models.PointIdsList(points=gone), wait=True)
    for i in gone:
        del state[i]
    redo = list(range(5, N, 10))
    for i in redo:
        state[i] = payload(i)
    client.upsert("docs", points=[models.PointStruct(id=i, vector=[0, 1.0, 0, 0],
                                                     payload=state[i]) for i in redo],
                  wait=True)
    return state


def expected(state: dict[int, dict[str, Any]], key: str, limit: int = 10,
             where: Any = None) -> list[tuple[Any, int]]:
    counts: Counter[Any] = Counter()
    for p in state.values():
        if where is not None and not where(p):
            continue
        raw = p.get(key)
        values = raw if isinstance(raw, list) else [raw]
        kinds = {"source": str, "year": int, "flag": bool}[key]
        for v in {v for v in values if type(v) is kinds}:  # a point counts once a value
            counts[v] += 1
    return sorted(counts.items(), key=lambda h: (-h[1], h[0]))[:limit]


def got(client: QdrantClient, key: str, **kw: Any) -> list[tuple[Any, int]]:
    return [(h.value, h.count) for h in client.facet("docs", key, **kw).hits]


def test_facet_counts_every_live_point_once_per_value(
        client: QdrantClient, docs: dict[int, dict[str, Any]]) -> None:
    assert got(client, "source") == expected(docs, "source")
    assert got(client, "source", limit=2) == expected(docs, "source", 2)
    assert got(client, "year", limit=100) == expected(docs, "year", 100)
    assert got(client, "flag") == expected(docs, "flag")


def test_facet_within_a_filter(client: QdrantClient,
                               docs: dict[int, dict[str, Any]]) -> None:
    flt = models.Filter(must=[models.FieldCondition(key="year",
                                                    range=models.Range(gte=2020))],
                        must_not=[models.FieldCondition(key="flag",
                                                        match=models.MatchValue(value=True))])
    assert got(client, "source", facet_filter=flt) == expected(
        docs, "source", where=lambda p: p["year"] >= 2020 and not p["flag"])
    nothing = models.Filter(must=[models.FieldCondition(key="year",
                                                        range=models.Range(gt=3000))])
    assert got(client, "source", facet_filter=nothing) == []


def test_facet_needs_an_index_and_a_sane_limit(client: QdrantClient,
                                               docs: dict[int, dict[str, Any]]) -> None:
    with pytest.raises(UnexpectedResponse) as exc:
        client.facet("docs", "title")
    assert exc.value.status_code == 400 and "payload index" in str(exc.value)
    with pytest.raises(UnexpectedResponse) as exc:
        client.facet("docs", "source", limit=10**9)
    assert exc.value.status_code == 400
    with pytest.raises(UnexpectedResponse) as exc:
        client.facet("missing", "source")
    assert exc.value.status_code == 404
