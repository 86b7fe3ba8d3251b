"""Operations: health, metrics, request ids, logs, timing headers, cache, binary path,
auth, TLS, limits, traces and graceful shutdown, each against a real server process."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgpack
import numpy as np
import pytest
from apiutil import ServerProcess, error, ok
from qdrant_client import QdrantClient, models

from peregrine.runtime import idle_poll

Factory = Callable[..., ServerProcess]


def make(http: httpx.Client, name: str = "c", n: int = 100, dim: int = 8) -> np.ndarray:
    ok(http.put(f"/collections/{name}", json={"vectors": {"size": dim, "distance": "Dot"}}))
    vectors = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    ok(http.put(f"/collections/{name}/points?wait=true", json={"batch": {
        "ids": list(range(n)), "vectors": vectors.tolist(),
        "payloads": [{"i": i} for i in range(n)]}}))
    return vectors


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            head = line.split(" ")[0]
            if head == name or head.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in metrics")


def test_health_metrics_request_ids_and_logs(server_factory: Factory) -> None:
    server = server_factory()
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/healthz").text == "healthz check passed"
        assert http.get("/livez").status_code == 200
        assert http.get("/readyz").status_code == 200
        vectors = make(http)
        r = http.post("/collections/c/points/search", json={"vector": vectors[0].tolist(),
                                                            "limit": 3},
                      headers={"x-request-id": "my-trace-42"})
        ok(r)
        assert r.headers["x-request-id"] == "my-trace-42"
        timing = r.headers["server-timing"]
        for part in ("parse;dur=", "engine;dur=", "serialize;dur=", "cache;desc="):
            assert part in timing
        generated = http.get("/collections").headers["x-request-id"]
        assert generated and generated != "my-trace-42"
        error(http.get("/collections/missing"), 404)
        text = http.get("/metrics").text
    route = "/collections/{collection_name}/points/search"
    assert metric(text, "peregrine_http_requests_total", route=route, status="200") == 1
    assert metric(text, "peregrine_http_request_duration_seconds_count", route=route) == 1
    assert metric(text, "peregrine_http_requests_total", route="/collections/{collection_name}",
                  status="404") == 1
    assert metric(text, "peregrine_search_duration_seconds_count", collection="c") == 1
    assert metric(text, "peregrine_collection_points", collection="c") == 100
    assert metric(text, "collection_points", id="c") == 100  # Qdrant's name
    assert metric(text, "collections_total") >= 1
    assert metric(text, "peregrine_collection_segments", collection="c") >= 1
    assert metric(text, "peregrine_collection_index_backlog_segments", collection="c") >= 0
    assert metric(text, "peregrine_collection_wal_bytes", collection="c") > 0
    assert metric(text, "process_resident_memory_bytes") > 10e6
    metric(text, "peregrine_result_cache_hit_ratio")
    with httpx.Client(base_url=server.url) as http:  # a dropped collection's series go
        ok(http.delete("/collections/c"))
        after = http.get("/metrics").text
    assert 'collection="c"' not in after
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    mine = [e for e in lines if e["request_id"] == "my-trace-42"]
    assert mine and mine[0]["route"] == route and mine[0]["status"] == 200
    assert all("ts" in e and "level" in e and "msg" in e for e in lines)


def test_result_cache_hits_until_a_write(server_factory: Factory) -> None:
    server = server_factory()
    with httpx.Client(base_url=server.url) as http:
        vectors = make(http)
        body = {"vector": vectors[1].tolist(), "limit": 2, "with_payload": True}
        first = http.post("/collections/c/points/search", json=body)
        second = http.post("/collections/c/points/search", json=body)
        assert 'cache;desc="miss"' in first.headers["server-timing"]
        assert 'cache;desc="hit"' in second.headers["server-timing"]
        assert ok(first) == ok(second)
        top = ok(second)[0]["id"]
        ok(http.post("/collections/c/points/delete?wait=true", json={"points": [top]}))
        third = http.post("/collections/c/points/search", json=body)
        assert 'cache;desc="miss"' in third.headers["server-timing"]
        assert top not in [p["id"] for p in ok(third)]
        text = http.get("/metrics").text
    assert metric(text, "peregrine_result_cache_hits_total") == 1
    assert metric(text, "peregrine_result_cache_hit_ratio") == pytest.approx(1 / 3)


def test_msgpack_binary_vectors(server_factory: Factory) -> None:
    server = server_factory()
    headers = {"content-type": "application/msgpack", "accept": "application/msgpack"}
    with httpx.Client(base_url=server.url) as http:
        ok(http.put("/collections/b", json={"vectors": {"size": 4, "distance": "Euclid"}}))
        vectors = np.arange(40, dtype="<f4").reshape(10, 4)
        body = msgpack.packb({"batch": {"ids": list(range(10)), "vectors": vectors.tobytes()}})
        r = http.put("/collections/b/points?wait=true", content=body, headers=headers)
        assert r.status_code == 200 and r.headers["content-type"] == "application/msgpack"
        assert msgpack.unpackb(r.content)["status"] == "ok"
        query = np.array([8, 9, 10, 11], dtype="<f4")
        r = http.post("/collections/b/points/search", headers=headers,
                      content=msgpack.packb({"vector": query.tobytes(), "limit": 2,
                                             "with_vector": True}))
        answer = msgpack.unpackb(r.content)
        assert answer["status"] == "ok" and isinstance(answer["time"], float)
        assert [p["id"] for p in answer["result"]] == [2, 1]
        assert answer["result"][0]["score"] == 0.0
        assert answer["result"][0]["vector"] == [8.0, 9.0, 10.0, 11.0]
        as_json = ok(http.post("/collections/b/points/search",
                               json={"vector": query.tolist(), "limit": 2}))
        assert [p["id"] for p in as_json] == [2, 1]


def test_api_keys(server_factory: Factory) -> None:
    server = server_factory("--http-api-key", "secret-full",
                            "--http-read-only-api-key", "secret-ro")
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/healthz").status_code == 200  # probes need no key
        assert http.get("/readyz").status_code == 200
        error(http.get("/collections"), 401)
        error(http.get("/collections", headers={"api-key": "wrong"}), 401)
        assert http.get("/collections", headers={"api-key": "secret-ro"}).status_code == 200
        assert http.get("/collections", headers={
            "authorization": "Bearer secret-ro"}).status_code == 200
        assert http.get("/metrics", headers={"api-key": "secret-ro"}).status_code == 200
        body = {"vectors": {"size": 2, "distance": "Dot"}}
        error(http.put("/collections/k", json=body, headers={"api-key": "secret-ro"}), 403)
        ok(http.put("/collections/k", json=body, headers={"authorization": "Bearer secret-full"}))
    with pytest.warns(UserWarning):  # qdrant-client warns about a key over plain http
        client = QdrantClient(url=server.url, api_key="secret-ro", prefer_grpc=False)
    assert client.collection_exists("k")
    with pytest.raises(Exception, match="403"):
        client.upsert("k", [models.PointStruct(id=1, vector=[1.0, 2.0])])
    client.close()


def test_tls(server_factory: Factory, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    config = tmp_path / "peregrine.toml"
    config.write_text(f'[http]\ntls_cert = "{cert}"\ntls_key = "{key}"\n')
    server = server_factory("--config", str(config), scheme="https")
    assert server.url.startswith("https://")
    trust = ssl.create_default_context(cafile=str(cert))
    assert httpx.get(server.url + "/collections", verify=trust).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/collections")  # untrusted certificate is refused
    client = QdrantClient(url=server.url, prefer_grpc=False, verify=trust)  # type: ignore[arg-type]
    assert client.get_collections().collections == []
    client.close()


def test_request_timeout_is_a_408_and_writes_nothing(server_factory: Factory) -> None:
    server = server_factory("--http-request-timeout-s", "0.001")
    vectors = np.random.default_rng(2).standard_normal((5000, 64)).astype(np.float32)
    with httpx.Client(base_url=server.url) as http:
        ok(http.get("/collections"))  # routes without engine work have no deadline
        r = http.put("/collections/t", json={"vectors": {"size": 64, "distance": "Dot"}})
        if r.status_code == 408:  # even a create can miss 1 ms on a busy machine
            return
        r = http.put("/collections/t/points?wait=true", json={"batch": {
            "ids": list(range(5000)), "vectors": vectors.tolist()}})
        assert "Timeout" in error(r, 408)
        count = http.post("/collections/t/points/count", json={})
        if count.status_code == 200:
            assert count.json()["result"]["count"] == 0


def test_tracing_exports_spans_with_the_callers_trace(server_factory: Factory) -> None:
    server = server_factory(env={"OTEL_TRACES_EXPORTER": "console",
                                 "OTEL_SERVICE_NAME": "peregrine-test"})
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = f"00-{trace_id}-00f067aa0ba902b7-01"
    with httpx.Client(base_url=server.url) as http:
        ok(http.get("/collections", headers={"traceparent": parent}))
    assert server.stop() == 0
    spans = [json.loads(line) for line in server.stdout().splitlines() if line.startswith("{")]
    mine = [s for s in spans if s["context"]["trace_id"] == "0x" + trace_id]
    assert mine and mine[0]["name"] == "GET /collections"
    assert mine[0]["parent_id"] == "0x00f067aa0ba902b7"
    assert mine[0]["resource"]["attributes"]["service.name"] == "peregrine-test"


def test_graceful_shutdown_finishes_in_flight_work(server_factory: Factory,
                                                   tmp_path: Path) -> None:
    data = tmp_path / "graceful"
    server = server_factory("--vector-fsync", "never", data=data)
    http = httpx.Client(base_url=server.url, timeout=60)
    ok(http.put("/collections/g", json={"vectors": {"size": 64, "distance": "Dot"}}))
    vectors = np.random.default_rng(1).standard_normal((5000, 64)).astype(np.float32)
    results: list[Any] = []

    def big_upsert() -> None:
        try:
            results.append(http.put("/collections/g/points?wait=true", json={"batch": {
                "ids": list(range(5000)), "vectors": vectors.tolist()}}))
        except httpx.HTTPError as exc:  # the signal came before the request got in
            results.append(exc)

    writer = threading.Thread(target=big_upsert)
    writer.start()
    time.sleep(0.05)
    rc = server.stop(signal.SIGTERM)
    writer.join()
    http.close()
    assert rc == 0, server.log()
    if results and isinstance(results[0], httpx.Response) and results[0].status_code == 200:
        acknowledged = 5000
    else:
        acknowledged = 0  # the request had not reached the server before it stopped
    restarted = server_factory(data=data)
    with httpx.Client(base_url=restarted.url) as http2:
        count = ok(http2.post("/collections/g/points/count", json={}))["count"]
    assert count in (0, 5000) and count >= acknowledged  # all or nothing; acked = kept


@pytest.mark.skipif(not idle_poll.available(), reason="Linux only")
def test_idle_poll_server_polls_while_serving_and_leaves_nothing_behind(
        server_factory: Factory) -> None:
    """`--runtime-idle-poll`: one SCHED_IDLE poller per CPU while serving; none after SIGTERM."""
    server = server_factory("--runtime-idle-poll")
    pid = server.proc.pid
    children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    pollers = [p for p in children if os.sched_getscheduler(p) == os.SCHED_IDLE]
    assert len(pollers) == len(os.sched_getaffinity(0)), server.log()
    with httpx.Client(base_url=server.url) as http:
        make(http, n=50, dim=8)
        assert len(ok(http.post("/collections/c/points/search",
                                json={"vector": [0.1] * 8, "limit": 3}))) == 3
    assert server.stop(signal.SIGTERM) == 0, server.log()
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{p}").exists() for p in pollers) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(Path(f"/proc/{p}").exists() for p in pollers)


def test_concurrent_clients_mix_inline_and_pooled_reads_with_writes(
        server_factory: Factory) -> None:
    """Reads run on the event loop when alone and on the engine pool when not; under
    concurrent readers and a writer every answer must still be exact."""
    server = server_factory("--vector-cache-entries", "0")
    with httpx.Client(base_url=server.url) as http:
        vectors = make(http, n=500, dim=16)
    errors: list[str] = []

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for _ in range(60):
                i = int(rng.integers(0, 500))
                r = client.post("/collections/c/points/search", json={
                    "vector": vectors[i].tolist(), "limit": 1, "params": {"exact": True},
                    "filter": {"must": [{"has_id": [i]}]}})
                if r.status_code != 200 or [p["id"] for p in r.json()["result"]] != [i]:
                    errors.append(r.text)

    def writer() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for j in range(30):
                r = client.put("/collections/c/points?wait=true", json={"points": [
                    {"id": 1000 + j, "vector": [float(j)] * 16}]})
                if r.status_code != 200:
                    errors.append(r.text)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(6)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    with httpx.Client(base_url=server.url) as http:
        assert ok(http.post("/collections/c/points/count", json={}))["count"] == 530
