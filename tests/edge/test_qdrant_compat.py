"""Answers that were silently wrong, or shaped unlike Qdrant's, for real Qdrant bodies."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from apiutil import ServerProcess, error, ok

C = "/collections/c"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("compat") / "data")
    yield s
    assert s.stop() == 0
    assert not s.server_errors(), s.server_errors()


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        client.delete(C)
        ok(client.put(C, json={"vectors": {"size": 4, "distance": "Dot"}}))
        yield client


def upsert(http: httpx.Client, points: list[dict[str, object]]) -> None:
    ok(http.put(C + "/points?wait=true", json={"points": points}))


def test_indexed_vectors_count_never_goes_negative(http: httpx.Client) -> None:
    upsert(http, [{"id": i, "vector": [1, 0, 0, i], "payload": {"i": i}} for i in range(10)])
    ok(http.post(C + "/points/delete?wait=true", json={"points": [0, 1, 2, 3, 4]}))
    ok(http.post(C + "/points/payload?wait=true", json={"payload": {"x": 1},
                                                         "points": [5, 6, 7]}))
    info = ok(http.get(C))
    assert info["points_count"] == 5
    assert 0 <= info["indexed_vectors_count"] <= info["points_count"]


def test_dotted_paths_select_nested_payload(http: httpx.Client) -> None:
    payload = {"country": {"name": "Germany", "capital": "Berlin",
                           "cities": [{"name": "a", "pop": 1}, {"name": "b", "pop": 2}]},
               "x": 1}
    upsert(http, [{"id": 1, "vector": [1, 0, 0, 0], "payload": payload}])

    def select(selector: object) -> object:
        body = {"ids": [1], "with_payload": selector}
        return ok(http.post(C + "/points", json=body))[0]["payload"]

    assert select(["country.name"]) == {"country": {"name": "Germany"}}
    assert select({"include": ["country.name", "x"]}) == {"country": {"name": "Germany"},
                                                          "x": 1}
    assert select({"exclude": ["country.name", "country.cities"]}) == {
        "country": {"capital": "Berlin"}, "x": 1}
    assert select({"include": ["country.cities[].name"]}) == {
        "country": {"cities": [{"name": "a"}, {"name": "b"}]}}
    assert select({"include": ["country.cities.name"]}) == {"country": {"cities": []}}
    hits = ok(http.post(C + "/points/search", json={"vector": [1, 0, 0, 0], "limit": 1,
                                                    "with_payload": ["country.name"]}))
    assert hits[0]["payload"] == {"country": {"name": "Germany"}}


def test_a_key_without_brackets_does_not_reach_into_arrays(http: httpx.Client) -> None:
    upsert(http, [{"id": 1, "vector": [1, 0, 0, 0],
                   "payload": {"country": {"cities": [{"population": 10}]}}}])

    def counted(key: str) -> int:
        flt = {"must": [{"key": key, "range": {"gte": 9}}]}
        return int(ok(http.post(C + "/points/count", json={"filter": flt}))["count"])

    assert counted("country.cities.population") == 0
    assert counted("country.cities[].population") == 1
    assert counted("country.cities[0].population") == 1


def test_floats_print_as_the_stored_float32(http: httpx.Client) -> None:
    upsert(http, [{"id": 1, "vector": [0.15, 0.25, 0.35, 0.45]}])
    text = http.post(C + "/points", json={"ids": [1], "with_vector": True}).text
    assert '"vector":[0.15,0.25,0.35,0.45]' in text
    hit = ok(http.post(C + "/points/search", json={"vector": [1, 0, 0, 0], "limit": 1}))[0]
    assert hit["score"] == 0.15
    scored = http.post(C + "/points/search", json={"vector": [0.1, 0.2, 0, 0], "limit": 1,
                                                   "with_vector": True}).text
    result = scored.split(',"status":', 1)[0]  # the envelope's time is a float64
    assert "00000" not in result and "99999" not in result


def test_a_point_without_payload_reads_as_an_empty_payload(http: httpx.Client) -> None:
    upsert(http, [{"id": 1, "vector": [1, 0, 0, 0]}])
    assert ok(http.post(C + "/points", json={"ids": [1]}))[0] == {"id": 1, "payload": {}}
    page = ok(http.post(C + "/points/scroll", json={}))["points"]
    assert page == [{"id": 1, "payload": {}}]
    assert ok(http.get(C + "/points/1"))["payload"] == {}
    hit = ok(http.post(C + "/points/search", json={"vector": [1, 0, 0, 0], "limit": 1}))[0]
    assert "payload" not in hit and "vector" not in hit  # not asked for: left out


def test_collection_config_reports_what_was_set(http: httpx.Client) -> None:
    body = {"vectors": {"size": 4, "distance": "Cosine", "on_disk": True},
            "on_disk_payload": False, "sharding_method": None,
            "hnsw_config": {"m": 8, "on_disk": True, "payload_m": 4},
            "optimizers_config": {"indexing_threshold": 0},
            "wal_config": {"wal_capacity_mb": 64},
            "quantization_config": {"scalar": {"type": "int8", "quantile": 0.99}},
            "metadata": {"owner": "team-a"}}
    ok(http.put("/collections/set", json=body))
    config = ok(http.get("/collections/set"))["config"]
    assert config["params"]["vectors"] == {"size": 4, "distance": "Cosine", "on_disk": True}
    assert config["params"]["on_disk_payload"] is False
    assert config["hnsw_config"]["m"] == 8 and config["hnsw_config"]["on_disk"] is True
    assert config["hnsw_config"]["payload_m"] == 4
    assert config["optimizer_config"]["indexing_threshold"] == 0
    assert config["wal_config"]["wal_capacity_mb"] == 64
    assert config["quantization_config"] == {"scalar": {"type": "int8", "quantile": 0.99}}
    assert config["metadata"] == {"owner": "team-a"}
    ok(http.delete("/collections/set"))


def test_field_condition_forms_of_is_empty_and_is_null(http: httpx.Client) -> None:
    upsert(http, [{"id": 1, "vector": [1, 0, 0, 0], "payload": {"city": "Oslo"}},
                  {"id": 2, "vector": [1, 0, 0, 0], "payload": {"city": None}},
                  {"id": 3, "vector": [1, 0, 0, 0]}])

    def ids(cond: dict[str, object]) -> set[int]:
        page = ok(http.post(C + "/points/scroll", json={"filter": {"must": [cond]}}))
        return {p["id"] for p in page["points"]}

    assert ids({"key": "city", "is_empty": True}) == {2, 3}
    assert ids({"key": "city", "is_empty": False}) == {1}
    assert ids({"key": "city", "is_null": True}) == {2}
    assert ids({"key": "city", "is_null": False}) == {1, 3}


def test_unknown_body_fields_are_ignored_as_qdrant_does(http: httpx.Client) -> None:
    upsert(http, [{"id": 1, "vector": [1, 0, 0, 0], "colour": "red"}])
    r = http.post(C + "/points/search", json={"vector": [1, 0, 0, 0], "limit": 1,
                                              "future_option": {"x": 1}})
    assert ok(r)[0]["id"] == 1
    # a stray "wait" in a recover body is no reason to refuse it
    r = http.put(C + "/snapshots/recover", json={"location": "ftp://x/y", "wait": True})
    assert "file://, http:// or https://" in error(r, 400)


def test_validation_errors_are_422_in_qdrants_words(http: httpx.Client) -> None:
    message = error(http.post(C + "/points/search", json={"vector": [1, 0, 0, 0],
                                                          "limit": 0}), 422)
    assert message == "Validation error in JSON body: [limit: value 0 invalid, must be 1 or larger]"
    message = error(http.post(C + "/points/search", json={"vector": "x", "limit": 1}), 400)
    assert message.startswith("Format error in JSON body: ")


def test_snapshot_without_waiting_is_202_accepted(http: httpx.Client) -> None:
    r = http.post(C + "/snapshots?wait=false")
    assert r.status_code == 202
    body = r.json()
    assert body["status"] == "accepted" and "result" not in body
    for _ in range(100):
        if ok(http.get(C + "/snapshots")):
            break
        time.sleep(0.05)
    assert len(ok(http.get(C + "/snapshots"))) == 1


def test_forbidden_snapshot_location_is_403(http: httpx.Client) -> None:
    r = http.put(C + "/snapshots/recover", json={"location": "file:///etc/passwd"})
    assert error(r, 403).startswith("Forbidden: Snapshot file path must be inside")
