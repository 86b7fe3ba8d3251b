"""Schema-driven fuzzing: schemathesis generates requests for every route of the
server's own OpenAPI document; no answer may be a 5xx.

Most generated requests name a real collection (``fuzz``, dimension 4, with
points and a payload index), so that bodies reach the engine instead of
stopping at "collection not found".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import msgpack
import pytest
import schemathesis
from apiutil import ServerProcess, ok
from hypothesis import HealthCheck, given, settings

EXAMPLES = 50


def _fit(value: Any) -> Any:
    """msgpack has no integers beyond 64 bits; JSON does. Send those as floats."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return float(value)
    if isinstance(value, list):
        return [_fit(v) for v in value]
    if isinstance(value, dict):
        return {k: _fit(v) for k, v in value.items()}
    return value


@schemathesis.serializer("application/msgpack")
def _to_msgpack(ctx: Any, value: Any) -> bytes:
    return bytes(msgpack.packb(_fit(value)))


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("fuzz") / "data", "--http-max-body-bytes",
                      str(1 << 20), "--http-request-timeout-s", "10", env={
                          "PEREGRINE_HTTP_ACCESS_LOG": "false"})
    yield s
    assert s.stop() == 0
    assert not s.server_errors(), "\n".join(s.server_errors()[:20])


def ensure_collection(url: str) -> None:
    with httpx.Client(base_url=url) as http:
        if http.get("/collections/fuzz/exists").json()["result"]["exists"]:
            return
        ok(http.put("/collections/fuzz", json={"vectors": {"size": 4, "distance": "Cosine"}}))
        ok(http.put("/collections/fuzz/points?wait=true", json={"points": [
            {"id": i, "vector": [1.0, i, 2.0, -i], "payload": {"k": f"v{i % 3}", "n": i}}
            for i in range(20)]}))
        ok(http.put("/collections/fuzz/index", json={"field_name": "n",
                                                     "field_schema": "integer"}))


# Routes that would destroy the shared collection keep their generated names.
_KEEP_NAME = {("DELETE", "/collections/{collection_name}"),
              ("PUT", "/collections/{collection_name}/snapshots/recover"),
              ("POST", "/collections/{collection_name}/snapshots/upload")}


def test_no_server_errors(fuzz_server: ServerProcess) -> None:
    """Every operation, EXAMPLES generated cases each (the pytest plugin of
    schemathesis does not load under pytest 9, so hypothesis drives it directly)."""
    url = fuzz_server.url
    ensure_collection(url)
    api = schemathesis.openapi.from_url(url + "/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in api.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case: Any) -> None:
            params = case.path_parameters or {}
            destructive = (case.method.upper(), case.path) in _KEEP_NAME
            if "collection_name" in params and not destructive:
                params["collection_name"] = "fuzz"
            response = case.call(base_url=url, timeout=30)
            if destructive:
                ensure_collection(url)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {case.body!r} -> "
                                f"{response.status_code} {response.text[:300]}")
            elif response.status_code >= 400 and "json" in str(
                    response.headers.get("content-type")):
                assert isinstance(response.json()["status"]["error"], str)

        fuzz()
    assert operations >= 30
    assert not failures, "\n".join(failures[:20])
