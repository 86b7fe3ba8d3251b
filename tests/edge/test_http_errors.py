"""Bad input over HTTP: a 4xx in Qdrant's error format, never a 5xx, nothing written."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import msgpack
import pytest
from apiutil import ServerProcess, error, ok

C = "/collections/bad"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("errors") / "data", "--http-max-body-bytes", "65536",
                      "--vector-max-batch", "100", "--vector-max-limit", "50")
    yield s
    assert s.stop() == 0
    assert not s.server_errors(), s.server_errors()


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        ok(c.put(C, json={"vectors": {"size": 3, "distance": "Cosine"}}))
        ok(c.put(C + "/points?wait=true", json={"points": [
            {"id": i, "vector": [1.0, float(i), 0.5], "payload": {"i": i}} for i in range(10)]}))
        yield c


def state(http: httpx.Client) -> tuple[int, object]:
    count = ok(http.post(C + "/points/count", json={}))["count"]
    points = ok(http.post(C + "/points/scroll", json={"limit": 50, "with_vector": True}))
    return count, points


BAD_REQUESTS = [
    # (description, method, path, kwargs, status)
    ("malformed JSON", "PUT", C + "/points", {"content": b'{"points": [{"id": 1,'}, 400),
    ("JSON NaN literal", "PUT", C + "/points",
     {"content": b'{"points": [{"id": 1, "vector": [NaN, 1, 2]}]}'}, 400),
    ("not an object", "PUT", C + "/points", {"json": [1, 2, 3]}, 400),
    ("wrong type of id", "PUT", C + "/points",
     {"json": {"points": [{"id": 1.5, "vector": [1, 2, 3]}]}}, 400),
    ("negative id", "PUT", C + "/points",
     {"json": {"points": [{"id": -1, "vector": [1, 2, 3]}]}}, 400),
    ("string id not a UUID", "PUT", C + "/points",
     {"json": {"points": [{"id": "abc", "vector": [1, 2, 3]}]}}, 400),
    ("wrong dimension", "PUT", C + "/points",
     {"json": {"points": [{"id": 11, "vector": [1, 2, 3]}, {"id": 12, "vector": [1, 2]}]}},
     400),
    ("strings in vector", "PUT", C + "/points",
     {"json": {"points": [{"id": 11, "vector": ["1", "2", "3"]}]}}, 400),
    ("nested vector", "PUT", C + "/points",
     {"json": {"points": [{"id": 11, "vector": [[1, 2, 3]]}]}}, 400),
    ("named vector", "PUT", C + "/points",
     {"json": {"points": [{"id": 11, "vector": {"text": [1, 2, 3]}}]}}, 400),
    ("payload not an object", "PUT", C + "/points",
     {"json": {"points": [{"id": 11, "vector": [1, 2, 3], "payload": [1]}]}}, 400),
    ("duplicate ids in a batch", "PUT", C + "/points",
     {"json": {"batch": {"ids": [11, 11], "vectors": [[1, 2, 3], [1, 2, 3]]}}}, 400),
    ("ids and vectors differ", "PUT", C + "/points",
     {"json": {"batch": {"ids": [11, 12], "vectors": [[1, 2, 3]]}}}, 400),
    ("batch above max_batch", "PUT", C + "/points",
     {"json": {"batch": {"ids": list(range(11, 112)), "vectors": [[1, 2, 3]] * 101}}}, 400),
    ("body above max_body_bytes", "PUT", C + "/points",
     {"content": b'{"points": [' + b" " * 70000 + b"]}"}, 413),
    ("unsupported media type", "PUT", C + "/points",
     {"content": b"<points/>", "headers": {"content-type": "application/xml"}}, 415),
    ("msgpack garbage", "PUT", C + "/points",
     {"content": b"\xc1\xc1\xc1", "headers": {"content-type": "application/msgpack"}}, 400),
    ("msgpack NaN", "PUT", C + "/points",
     {"content": msgpack.packb({"points": [{"id": 11, "vector": [float("nan"), 1.0, 2.0]}]}),
      "headers": {"content-type": "application/msgpack"}}, 400),
    ("msgpack vector bytes of wrong length", "PUT", C + "/points",
     {"content": msgpack.packb({"points": [{"id": 11, "vector": b"\x00" * 10}]}),
      "headers": {"content-type": "application/msgpack"}}, 400),
    ("unknown collection", "PUT", "/collections/nope/points",
     {"json": {"points": [{"id": 11, "vector": [1, 2, 3]}]}}, 404),
    ("bad query parameter", "PUT", C + "/points?wait=perhaps",
     {"json": {"points": [{"id": 11, "vector": [1, 2, 3]}]}}, 400),
    ("unknown query parameter", "PUT", C + "/points?hurry=1",
     {"json": {"points": [{"id": 11, "vector": [1, 2, 3]}]}}, 400),
    ("delete with neither ids nor filter", "POST", C + "/points/delete", {"json": {}}, 400),
    ("delete with an invalid filter", "POST", C + "/points/delete",
     {"json": {"filter": {"must": [{"key": "i", "match": {"regex": "x"}}]}}}, 400),
    ("delete filter that is not an object", "POST", C + "/points/delete",
     {"json": {"filter": [1]}}, 400),
    ("set payload on a nested key", "POST", C + "/points/payload",
     {"json": {"payload": {"a": 1}, "points": [1], "key": "x.y"}}, 400),
    ("search without a body", "POST", C + "/points/search", {}, 400),
    ("search, wrong dimension", "POST", C + "/points/search",
     {"json": {"vector": [1, 2], "limit": 3}}, 400),
    ("search, limit 0", "POST", C + "/points/search",
     {"json": {"vector": [1, 2, 3], "limit": 0}}, 422),
    ("search, limit above max_limit", "POST", C + "/points/search",
     {"json": {"vector": [1, 2, 3], "limit": 51}}, 400),
    ("search, invalid filter", "POST", C + "/points/search",
     {"json": {"vector": [1, 2, 3], "limit": 3, "filter": {"must": [{"key": 5}]}}}, 400),
    ("search, bool as vector", "POST", C + "/points/search",
     {"json": {"vector": True, "limit": 3}}, 400),
    ("recommend without positives", "POST", C + "/points/recommend",
     {"json": {"negative": [1], "limit": 3}}, 400),
    ("recommend from a missing point", "POST", C + "/points/recommend",
     {"json": {"positive": [12345], "limit": 3}}, 404),
    ("query by a missing point", "POST", C + "/points/query", {"json": {"query": 12345}}, 404),
    ("query with fusion", "POST", C + "/points/query", {"json": {"query": {"fusion": "rrf"}}},
     400),
    ("scroll, negative limit", "POST", C + "/points/scroll", {"json": {"limit": -1}}, 422),
    ("create with an unknown distance", "PUT", "/collections/new",
     {"json": {"vectors": {"size": 3, "distance": "Hamming"}}}, 400),
    ("create with size 0", "PUT", "/collections/new",
     {"json": {"vectors": {"size": 0, "distance": "Dot"}}}, 422),
    ("create with sharding", "PUT", "/collections/new",
     {"json": {"vectors": {"size": 3, "distance": "Dot"}, "shard_number": 3}}, 400),
    ("create with a bad name", "PUT", "/collections/-x", {"json": {"vectors": {
        "size": 3, "distance": "Dot"}}}, 400),
    ("create an existing collection", "PUT", C,
     {"json": {"vectors": {"size": 3, "distance": "Dot"}}}, 409),
    ("index of an unknown type", "PUT", C + "/index",
     {"json": {"field_name": "i", "field_schema": "ngram"}}, 400),
    ("snapshot recover outside the snapshot dir", "PUT", C + "/snapshots/recover",
     {"json": {"location": "file:///etc/passwd"}}, 403),
    ("snapshot recover, unsupported scheme", "PUT", C + "/snapshots/recover",
     {"json": {"location": "ftp://example.com/x.snapshot"}}, 400),
    ("snapshot recover, unreachable URL", "PUT", C + "/snapshots/recover",
     {"json": {"location": "http://127.0.0.1:9/x.snapshot"}}, 400),
    ("upload that is not a snapshot", "POST", C + "/snapshots/upload",
     {"files": {"snapshot": ("x.snapshot", b"not a tar file")}}, 400),
    ("upload without a file", "POST", C + "/snapshots/upload",
     {"data": {"other": "x"}}, 400),
    ("download a missing snapshot", "GET", C + "/snapshots/none.snapshot", {}, 404),
    ("download with a path trick", "GET", C + "/snapshots/..%2F..%2Fpasswd", {}, 404),
    ("unknown route", "GET", "/nothing/here", {}, 404),
    ("wrong method", "PATCH", C + "/points/search", {}, 405),
]


@pytest.mark.parametrize(("what", "method", "path", "kwargs", "status"), BAD_REQUESTS,
                         ids=[b[0] for b in BAD_REQUESTS])
def test_bad_request_is_a_clear_4xx_and_changes_nothing(
        http: httpx.Client, what: str, method: str, path: str, kwargs: dict[str, object],
        status: int) -> None:
    before = state(http)
    response = http.request(method, path, **kwargs)  # type: ignore[arg-type]
    message = error(response, status)
    assert len(message) < 2000
    assert "Traceback" not in message
    assert response.headers["x-request-id"]
    assert state(http) == before
    assert not http.get("/collections/new/exists").json()["result"]["exists"]


def test_errors_keep_the_server_healthy(http: httpx.Client, server: ServerProcess) -> None:
    assert http.get("/healthz").status_code == 200
    assert not server.server_errors()
