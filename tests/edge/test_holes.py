"""Holes found by probing a running server as an attacker and as a careless client.

Each test here reproduces one: it failed against the server before the fix.
"""

from __future__ import annotations

import io
import json
import signal
import socket
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import msgpack
import numpy as np
import pytest
from apiutil import ServerProcess, error, ok

Factory = Callable[..., ServerProcess]
C = "/collections/c"


def make(http: httpx.Client, name: str = "c", n: int = 10, dim: int = 4) -> None:
    ok(http.put(f"/collections/{name}", json={"vectors": {"size": dim, "distance": "Cosine"}}))
    vectors = np.random.default_rng(0).standard_normal((n, dim)).round(3)
    ok(http.put(f"/collections/{name}/points?wait=true", json={"batch": {
        "ids": list(range(n)), "vectors": vectors.tolist(),
        "payloads": [{"i": i} for i in range(n)]}}))


def count(http: httpx.Client, name: str = "c") -> int:
    return int(ok(http.post(f"/collections/{name}/points/count", json={}))["count"])


@pytest.fixture
def server(server_factory: Factory) -> ServerProcess:
    return server_factory("--vector-max-batch", "100", "--http-header-timeout-s", "1",
                          "--http-body-timeout-s", "1")


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        make(client)
        yield client


# -- high ----------------------------------------------------------------------------
def _snapshot_with(http: httpx.Client, change: Callable[[dict[str, bytes]], None]) -> bytes:
    """A real snapshot of c with its members altered by ``change`` (file list removed,
    as in snapshots written before it existed, so only the deep checks can tell)."""
    info = ok(http.post(C + "/snapshots"))
    data = http.get(f"{C}/snapshots/{info['name']}").content
    members: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            if m.isfile():
                members[m.name] = tar.extractfile(m).read()  # type: ignore[union-attr]
    members.pop("snapshot.json")
    change(members)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, content in sorted(members.items()):
            entry = tarfile.TarInfo(name)
            entry.size = len(content)
            tar.addfile(entry, io.BytesIO(content))
    return out.getvalue()


def _config(members: dict[str, bytes], **changes: Any) -> None:
    members["config.json"] = json.dumps({**json.loads(members["config.json"]),
                                         **changes}).encode()


def _wal(members: dict[str, bytes]) -> str:
    return next(n for n in members if n.startswith("wal/"))


BAD_SNAPSHOTS: dict[str, Callable[[dict[str, bytes]], None]] = {
    "config dim -5": lambda m: _config(m, dim=-5),
    "config dim 10**12": lambda m: _config(m, dim=10**12),
    "config is a list": lambda m: m.__setitem__("config.json", b"[1]"),
    "config dim 8 over a 4-d WAL": lambda m: _config(m, dim=8),
    "WAL file named abc.wal": lambda m: m.__setitem__("wal/abc.wal", m.pop(_wal(m))),
    "WAL truncated by 7 bytes": lambda m: m.__setitem__(_wal(m), m[_wal(m)][:-7]),
    "manifest corrupt": lambda m: m.__setitem__("manifest.json", b"{nope"),
    "manifest lists a missing segment": lambda m: m.__setitem__(
        "manifest.json", b'{"checkpoint": 0, "segments": [99], "next_segment_id": 100}'),
}


@pytest.mark.parametrize("case", list(BAD_SNAPSHOTS))
def test_snapshot_that_does_not_load_is_a_400_and_changes_nothing(
        server: ServerProcess, http: httpx.Client, case: str) -> None:
    bad = _snapshot_with(http, BAD_SNAPSHOTS[case])
    upload = http.post(C + "/snapshots/upload", files={"snapshot": ("x.snapshot", bad)})
    assert "snapshot" in error(upload, 400)
    assert count(http) == 10
    ok(http.put(C + "/points?wait=true", json={"points": [{"id": 50, "vector": [1, 0, 0, 0]}]}))
    renamed = http.post("/collections/n1/snapshots/upload",
                        files={"snapshot": ("x.snapshot", bad)})
    error(renamed, 400)
    assert http.get("/collections/n1/exists").json()["result"]["exists"] is False
    assert {p.name for p in (server.data / "collections").iterdir()} == {"c"}


def test_restart_after_failed_restores(server_factory: Factory, tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = server_factory(data=data)
    with httpx.Client(base_url=first.url, timeout=30) as client:
        make(client)
        for change in BAD_SNAPSHOTS.values():
            bad = _snapshot_with(client, change)
            for name in ("c", "fresh"):
                error(client.post(f"/collections/{name}/snapshots/upload",
                                  files={"snapshot": ("x.snapshot", bad)}), 400)
    assert first.stop() == 0
    second = server_factory(data=data)  # the restarts that used to fail
    with httpx.Client(base_url=second.url) as client:
        assert count(client) == 10
        assert [c["name"] for c in ok(client.get("/collections"))["collections"]] == ["c"]


@pytest.mark.parametrize("ef", [600_000_000, 2_147_483_648])
def test_hnsw_ef_has_a_cap(http: httpx.Client, ef: int) -> None:
    started = time.perf_counter()
    r = http.post(C + "/points/search", json={"vector": [1, 0, 0, 0], "limit": 3,
                                              "params": {"hnsw_ef": ef}})
    assert "max_ef" in error(r, 400)
    assert time.perf_counter() - started < 2


# -- medium ----------------------------------------------------------------------------
def test_huge_filter_is_refused_and_the_loop_stays_free(http: httpx.Client,
                                                        server: ServerProcess) -> None:
    """300,000 conditions in 10 MiB: refused before it is parsed, /healthz never waits.

    It used to be parsed and evaluated on the event loop (/healthz waited 3.4 s).
    """
    conditions = [{"key": "i", "match": {"value": k}} for k in range(300_000)]
    body = json.dumps({"filter": {"should": conditions}}).encode()
    assert len(body) > 9 << 20
    worst = 0.0
    done = threading.Event()

    def probe() -> None:
        nonlocal worst
        with httpx.Client(base_url=server.url) as other:
            while not done.is_set():
                t0 = time.perf_counter()
                assert other.get("/healthz").status_code == 200
                worst = max(worst, time.perf_counter() - t0)
                time.sleep(0.02)

    poller = threading.Thread(target=probe)
    poller.start()
    try:
        r = http.post(C + "/points/count", content=body,
                      headers={"content-type": "application/json"})
    finally:
        done.set()
        poller.join()
    assert "http.max_query_body_bytes" in error(r, 413)
    assert worst < 0.25, worst


def test_filters_have_a_condition_limit(http: httpx.Client) -> None:
    conditions = [{"key": "i", "match": {"value": k}} for k in range(2000)]
    r = http.post(C + "/points/count", json={"filter": {"should": conditions}})
    assert "more than 1024 conditions" in error(r, 400)


def test_filter_nested_500_deep_names_the_depth_limit(http: httpx.Client) -> None:
    leaf = b'{"key": "i", "match": {"value": 1}}'
    body = b'{"filter": ' + b'{"must": [' * 500 + leaf + b"]}" * 500 + b"}"
    message = error(http.post(C + "/points/count", content=body,
                              headers={"content-type": "application/json"}), 400)
    assert "nested more than 32 levels" in message


def test_request_timeout_reaches_the_engine(server_factory: Factory) -> None:
    """?timeout stops engine work: the request answers 408 at its deadline and the
    engine does not run on (a later request is not held up by it)."""
    server = server_factory("--vector-max-filter-conditions", "1000000",
                            "--http-max-query-body-bytes", str(32 << 20))
    with httpx.Client(base_url=server.url, timeout=60) as client:
        make(client, n=2000)
        many = [{"key": "i", "match": {"value": k}} for k in range(400_000)]
        t0 = time.perf_counter()
        r = client.post(C + "/points/count?timeout=1", json={"filter": {"should": many}})
        elapsed = time.perf_counter() - t0
        assert "Timeout" in error(r, 408)
        assert elapsed < 5
        t0 = time.perf_counter()
        assert count(client) == 2000
        assert time.perf_counter() - t0 < 1


def _open(server: ServerProcess) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port))
    s.settimeout(10)
    return s


def _closed_within(s: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed the connection in time, and what it said."""
    s.settimeout(seconds)
    got = b""
    try:
        while chunk := s.recv(4096):
            got += chunk
        return True, got
    except TimeoutError:
        return False, got
    finally:
        s.close()


@pytest.mark.parametrize("opening", [
    b"",  # silent
    b"POST /collections/c/points/count HTTP/1.1\r\nHost: x\r\nContent-",  # half the headers
    b"POST /collections/c/points/count HTTP/1.1\r\nHost: x\r\ncontent-type: application/json"
    b"\r\ncontent-length: 100\r\n\r\n{\"filter\"",  # a short body
], ids=["silent", "half-headers", "short-body"])
def test_connections_that_never_finish_a_request_are_closed(
        server: ServerProcess, http: httpx.Client, opening: bytes) -> None:
    s = _open(server)
    if opening:
        s.sendall(opening)
    closed, said = _closed_within(s, 6)
    assert closed
    if opening:
        assert said.startswith(b"HTTP/1.1 408")


def test_connection_count_is_bounded(server_factory: Factory) -> None:
    server = server_factory("--http-max-connections", "20", "--http-header-timeout-s", "2")
    idle = [_open(server) for _ in range(20)]
    extra = _open(server)
    closed, said = _closed_within(extra, 3)
    assert closed and said.startswith(b"HTTP/1.1 503")
    for s in idle:
        s.close()
    time.sleep(0.3)
    assert httpx.get(server.url + "/healthz").status_code == 200


# -- low -------------------------------------------------------------------------------
def test_long_collection_names_can_be_snapshotted(http: httpx.Client) -> None:
    name = "n" * 240
    make(http, name)
    snap = ok(http.post(f"/collections/{name}/snapshots"))
    assert len(snap["name"]) < 240
    listed = ok(http.get(f"/collections/{name}/snapshots"))
    assert [s["name"] for s in listed] == [snap["name"]]
    assert http.get(f"/collections/{name}/snapshots/{snap['name']}").status_code == 200


@pytest.mark.parametrize("point", ["²", "１", "٣"])
def test_non_ascii_digits_are_not_point_ids(http: httpx.Client, point: str) -> None:
    error(http.get(f"{C}/points/{point}"), 400)


@pytest.mark.parametrize("path", ["/points/payload/delete", "/points/payload/clear"])
def test_payload_edits_respect_the_batch_limit(http: httpx.Client, path: str) -> None:
    body: dict[str, Any] = {"points": list(range(101))}
    if path.endswith("delete"):
        body["keys"] = ["i"]
    assert "max_batch" in error(http.post(C + path, json=body), 400)
    assert ok(http.post(C + "/points/scroll", json={"limit": 1}))["points"][0]["payload"]


def test_nan_score_threshold_over_msgpack_is_refused(http: httpx.Client) -> None:
    body = msgpack.packb({"vector": [1.0, 0, 0, 0], "limit": 3, "score_threshold": float("nan")})
    r = http.post(C + "/points/search", content=body,
                  headers={"content-type": "application/msgpack"})
    assert "score_threshold" in error(r, 400)


def test_malformed_msgpack_says_what_is_wrong(http: httpx.Client) -> None:
    r = http.post(C + "/points/search", content=b"\xc1",
                  headers={"content-type": "application/msgpack"})
    message = error(r, 400)
    assert message.split("msgpack body:", 1)[1].strip()


class _Unauthorized(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(401)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_failed_recover_does_not_tell_what_answered(http: httpx.Client) -> None:
    answering = HTTPServer(("127.0.0.1", 0), _Unauthorized)
    threading.Thread(target=answering.serve_forever, daemon=True).start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    try:
        messages = [error(http.put(C + "/snapshots/recover", json={"location": url}), 400)
                    for url in (f"http://127.0.0.1:{answering.server_port}/x.snapshot",
                                f"http://127.0.0.1:{closed_port}/x.snapshot")]
    finally:
        answering.shutdown()
    assert messages[0] == messages[1]
    assert "401" not in messages[0] and "refused" not in messages[0].lower()
    assert count(http) == 10


def test_recover_hosts_can_be_restricted(server_factory: Factory) -> None:
    server = server_factory("--vector-snapshot-url-hosts", "snapshots.example")
    with httpx.Client(base_url=server.url) as client:
        make(client)
        r = client.put(C + "/snapshots/recover",
                       json={"location": f"http://127.0.0.1:{server.port}/x.snapshot"})
        assert "snapshot_url_hosts" in error(r, 403)


def test_sigterm_during_a_merge_does_not_wait_for_it(server_factory: Factory) -> None:
    server = server_factory()
    dim = 96
    with httpx.Client(base_url=server.url, timeout=60) as client:
        ok(client.put(C, json={"vectors": {"size": dim, "distance": "Dot"},
                               "hnsw_config": {"m": 48, "ef_construct": 500}}))
        rng = np.random.default_rng(1)
        for start in range(0, 60_000, 5000):
            vectors = rng.standard_normal((5000, dim)).astype(np.float32)
            ok(client.put(C + "/points", content=msgpack.packb({"batch": {
                "ids": list(range(start, start + 5000)), "vectors": vectors.tobytes()}}),
                headers={"content-type": "application/msgpack"}))
        deadline = time.monotonic() + 60
        while ok(client.get(C))["status"] == "green" and time.monotonic() < deadline:
            time.sleep(0.1)  # wait for a build to be under way
    started = time.monotonic()
    assert server.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 6


def test_pipelined_request_is_not_timed_out_while_the_server_is_busy(
        server_factory: Factory) -> None:
    """The second of two pipelined requests waits, unread, while the first runs: the
    body timeout must not count that wait against the client."""
    server = server_factory("--http-body-timeout-s", "1", "--http-max-query-body-bytes",
                            str(32 << 20), "--vector-max-filter-conditions", "1000000")
    with httpx.Client(base_url=server.url, timeout=60) as client:
        make(client, n=2000)
    slow = json.dumps({"filter": {"should": [{"key": "i", "match": {"value": k}}
                                             for k in range(400_000)]}}).encode()
    quick = b'{"filter": {}}'
    s = _open(server)
    s.sendall(b"POST /collections/c/points/count HTTP/1.1\r\nhost: x\r\n"
              b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(slow) + slow)
    s.sendall(b"POST /collections/c/points/count HTTP/1.1\r\nhost: x\r\n"
              b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(quick)
              + quick[:5])
    time.sleep(0.05)
    s.sendall(quick[5:])
    s.settimeout(60)
    got = b""
    while got.count(b"HTTP/1.1 ") < 2 or not got.endswith(b"}"):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    s.close()
    assert got.count(b"HTTP/1.1 200") == 2, got[:300]
