"""Facets (``POST /collections/{c}/facet``) through the official qdrant-client,
against counts computed from the points' payloads."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import numpy as np
import pytest
from apiutil import ServerProcess
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

N = 400


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


@pytest.fixture(scope="module")
def events(client: QdrantClient) -> dict[int, dict[str, Any]]:
    """300 points with a float time (some integers, some arrays, some missing)."""
    rng = np.random.default_rng(8)
    client.create_collection("events", vectors_config=models.VectorParams(
        size=2, distance=models.Distance.DOT))
    client.create_payload_index("events", "ts", models.PayloadSchemaType.FLOAT, wait=True)
    client.create_payload_index("events", "rank", models.PayloadSchemaType.INTEGER, wait=True)
    state: dict[int, dict[str, Any]] = {}
    for i in range(300):
        p: dict[str, Any] = {"rank": int(rng.integers(0, 50)), "kind": ["a", "b"][i % 2]}
        r = rng.random()
        if r < 0.7:
            p["ts"] = round(float(rng.uniform(0, 1000)), 3)
        elif r < 0.8:
            p["ts"] = int(rng.integers(0, 1000))
        elif r < 0.9:
            p["ts"] = [round(float(rng.uniform(0, 1000)), 3) for _ in range(2)]
        state[i] = p
    client.upsert("events", points=[models.PointStruct(id=i, vector=[1.0, 0.0], payload=p)
                                    for i, p in state.items()], wait=True)
    gone = list(range(0, 300, 7))
    client.delete("events", points_selector=models.PointIdsList(points=gone), wait=True)
    return {i: p for i, p in state.items() if i not in gone}


def ordered(state: dict[int, dict[str, Any]], key: str, desc: bool, limit: int,
            start: float | None = None, where: Any = None) -> list[tuple[int, Any]]:
    rows = []
    for i, p in state.items():
        raw = p.get(key)
        values = [v for v in (raw if isinstance(raw, list) else [raw])
                  if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if start is not None:
            values = [v for v in values if (v <= start if desc else v >= start)]
        if not values or (where is not None and not where(p)):
            continue
        rows.append((max(values) if desc else min(values), i))
    rows.sort(key=lambda r: (-r[0] if desc else r[0], r[1]))
    return [(i, v) for v, i in rows[:limit]]


def test_scroll_in_the_order_of_a_numeric_field(
        client: QdrantClient, events: dict[int, dict[str, Any]]) -> None:
    for desc in (False, True):
        order = models.OrderBy(key="ts", direction="desc" if desc else "asc")
        page, next_offset = client.scroll("events", order_by=order, limit=25)
        assert next_offset is None
        assert [(p.id, p.order_value) for p in page] == ordered(events, "ts", desc, 25)
        # The next page starts from the last value (ties at the seam repeat, as in Qdrant).
        last = page[-1].order_value
        more, _ = client.scroll("events", order_by=models.OrderBy(
            key="ts", direction=order.direction, start_from=last), limit=10)
        assert [(p.id, p.order_value) for p in more] == ordered(events, "ts", desc, 10, last)
    flt = models.Filter(must=[models.FieldCondition(key="kind",
                                                    match=models.MatchValue(value="b"))])
    page, _ = client.scroll("events", order_by="rank", scroll_filter=flt, limit=200)
    assert [(p.id, p.order_value) for p in page] == ordered(
        events, "rank", False, 200, where=lambda p: p["kind"] == "b")
    assert all(isinstance(p.order_value, int) for p in page)


def test_order_by_needs_a_numeric_index_and_no_offset(
        server: ServerProcess, events: dict[int, dict[str, Any]]) -> None:
    for bad in ({"order_by": "kind"}, {"order_by": "ts", "offset": 3},
                {"order_by": {"key": "ts", "start_from": "2024-01-01T00:00:00Z"}}):
        r = httpx.post(f"{server.url}/collections/events/points/scroll",
                       json=bad, timeout=10)
        assert r.status_code == 400, (bad, r.text)


def test_query_in_the_order_of_a_field_alone_and_over_a_prefetch(
        client: QdrantClient, events: dict[int, dict[str, Any]]) -> None:
    order = models.OrderByQuery(order_by=models.OrderBy(key="ts", direction="desc"))
    res = client.query_points("events", query=order, limit=12, offset=3)
    assert [(p.id, p.order_value) for p in res.points] == ordered(events, "ts", True, 15)[3:]
    flt = models.Filter(must=[models.FieldCondition(key="rank", range=models.Range(lt=10))])
    res = client.query_points("events", prefetch=models.Prefetch(filter=flt, limit=1000),
                              query=models.OrderByQuery(order_by="ts"), limit=8)
    assert [(p.id, p.order_value) for p in res.points] == ordered(
        events, "ts", False, 8, where=lambda p: p["rank"] < 10)


def test_datetime_ranges_and_has_vector(client: QdrantClient, server: ServerProcess) -> None:
    from datetime import UTC, datetime, timedelta, timezone

    client.create_collection("dated", vectors_config=models.VectorParams(
        size=2, distance=models.Distance.DOT))
    client.create_payload_index("dated", "at", models.PayloadSchemaType.DATETIME, wait=True)
    base = datetime(2024, 3, 1, tzinfo=UTC)
    rng = np.random.default_rng(4)
    moments: dict[int, datetime | None] = {}
    points = []
    for i in range(200):
        moment = base + timedelta(hours=int(rng.integers(0, 24 * 60)))
        style = i % 5
        if style == 0:
            text: Any = moment.isoformat().replace("+00:00", "Z")
        elif style == 1:
            text = moment.astimezone(timezone(timedelta(hours=2))).isoformat()
        elif style == 2:
            text = moment.strftime("%Y-%m-%d %H:%M:%S")  # no zone: UTC
        elif style == 3:
            text, moment = moment.strftime("%Y-%m-%d"), moment.replace(hour=0)
        else:
            text, moment = ["not a date", 17][i % 2], None  # type: ignore[assignment]
        moments[i] = moment
        points.append(models.PointStruct(id=i, vector=[1.0, 0.0], payload={"at": text}))
    client.upsert("dated", points=points, wait=True)
    lo, hi = base + timedelta(days=10), base + timedelta(days=40, hours=6)
    got = {p.id for p in client.scroll("dated", scroll_filter=models.Filter(must=[
        models.FieldCondition(key="at", range=models.DatetimeRange(gte=lo, lt=hi))]),
        limit=500)[0]}
    assert got == {i for i, m in moments.items() if m is not None and lo <= m < hi}
    assert client.count("dated", count_filter=models.Filter(must=[
        models.HasVectorCondition(has_vector="")])).count == 200
    for bad in ({"must": [{"has_vector": "text-dense"}]},
                {"must": [{"key": "at", "range": {"gte": "yesterday"}}]}):
        r = httpx.post(f"{server.url}/collections/dated/points/count",
                       json={"filter": bad}, timeout=10)
        assert r.status_code == 400, r.text


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    import math

    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(math.sqrt(h))


def test_geo_radius_box_and_polygon(client: QdrantClient, server: ServerProcess) -> None:
    client.create_collection("places", vectors_config=models.VectorParams(
        size=2, distance=models.Distance.DOT))
    client.create_payload_index("places", "loc", models.PayloadSchemaType.GEO, wait=True)
    rng = np.random.default_rng(6)
    spots: dict[int, list[tuple[float, float]]] = {}
    points = []
    for i in range(300):
        here = [(13.4 + float(rng.uniform(-0.5, 0.5)), 52.5 + float(rng.uniform(-0.3, 0.3)))
                for _ in range(1 if i % 4 else 2)]
        spots[i] = here
        loc: Any = [{"lon": x, "lat": y} for x, y in here] if len(here) > 1 else \
            {"lon": here[0][0], "lat": here[0][1]}
        points.append(models.PointStruct(id=i, vector=[1.0, 0.0], payload={"loc": loc}))
    points.append(models.PointStruct(id=999, vector=[1.0, 0.0], payload={"loc": "Berlin"}))
    client.upsert("places", points=points, wait=True)

    def ids(cond: models.FieldCondition) -> set[int]:
        return {int(p.id) for p in client.scroll("places", scroll_filter=models.Filter(
            must=[cond]), limit=1000)[0]}

    near = ids(models.FieldCondition(key="loc", geo_radius=models.GeoRadius(
        center=models.GeoPoint(lon=13.4, lat=52.5), radius=15_000.0)))
    assert near == {i for i, s in spots.items()
                    if any(haversine_m(13.4, 52.5, x, y) <= 15_000 for x, y in s)}
    assert 0 < len(near) < 300
    box = ids(models.FieldCondition(key="loc", geo_bounding_box=models.GeoBoundingBox(
        top_left=models.GeoPoint(lon=13.2, lat=52.6),
        bottom_right=models.GeoPoint(lon=13.5, lat=52.4))))
    assert box == {i for i, s in spots.items()
                   if any(13.2 <= x <= 13.5 and 52.4 <= y <= 52.6 for x, y in s)}
    ring = [(13.0, 52.3), (13.8, 52.3), (13.8, 52.7), (13.0, 52.7), (13.0, 52.3)]
    hole = [(13.3, 52.4), (13.5, 52.4), (13.5, 52.6), (13.3, 52.6), (13.3, 52.4)]
    poly = ids(models.FieldCondition(key="loc", geo_polygon=models.GeoPolygon(
        exterior=models.GeoLineString(points=[models.GeoPoint(lon=x, lat=y) for x, y in ring]),
        interiors=[models.GeoLineString(points=[models.GeoPoint(lon=x, lat=y)
                                                for x, y in hole])])))
    assert poly == {i for i, s in spots.items()
                    if any(13.0 < x < 13.8 and 52.3 < y < 52.7
                           and not (13.3 < x < 13.5 and 52.4 < y < 52.6) for x, y in s)}
    for bad in ({"key": "loc", "geo_radius": {"center": {"lon": 200, "lat": 0}, "radius": 1}},
                {"key": "loc", "geo_polygon": {"exterior": {"points": [{"lon": 0, "lat": 0}]}}},
                {"key": "loc", "geo_bounding_box": {"top_left": {"lon": 0, "lat": 0}}}):
        r = httpx.post(f"{server.url}/collections/places/points/count",
                       json={"filter": {"must": [bad]}}, timeout=10)
        assert r.status_code == 400, r.text


def test_a_uuid_index_matches_and_facets(client: QdrantClient) -> None:
    import uuid

    docs = [str(uuid.UUID(int=i * 7919)) for i in range(6)]
    client.create_collection("owned", vectors_config=models.VectorParams(
        size=2, distance=models.Distance.DOT))
    client.create_payload_index("owned", "doc", models.PayloadSchemaType.UUID, wait=True)
    client.upsert("owned", points=[models.PointStruct(id=i, vector=[1.0, 0.0],
                                                      payload={"doc": docs[i % 6 if i < 30 else 0]})
                                   for i in range(40)], wait=True)
    hits = client.facet("owned", "doc", limit=3).hits
    ties = sorted((d, 5) for d in docs[1:])  # equal counts: by value
    assert [(h.value, h.count) for h in hits] == [(docs[0], 15), *ties[:2]]
    n = client.count("owned", count_filter=models.Filter(must=[models.FieldCondition(
        key="doc", match=models.MatchValue(value=docs[2]))])).count
    assert n == 5
    info = client.get_collection("owned")
    assert info.payload_schema["doc"].data_type == models.PayloadSchemaType.UUID
