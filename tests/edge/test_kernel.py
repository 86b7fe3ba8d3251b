"""The shared HTTP edge with a second protocol mounted beside Qdrant's.

The ``Echo`` protocol below is what a new wire format needs: a ``Protocol``
subclass with its prefix, envelope, error body and operations, passed to the
composition root. Nothing in ``peregrine.edge.http`` changes for it: keys,
limits, request ids, metrics and server-sent events apply as they are.
"""

from __future__ import annotations

import ast
import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from pydantic import BaseModel

from peregrine import bootstrap
from peregrine.core.settings import build
from peregrine.edge.http.protocol import (
    Accepted,
    Access,
    Call,
    EventStream,
    Format,
    HttpError,
    Operation,
    Protocol,
)
from peregrine.edge.http.transport import ConnectionLimits, guarded_protocol
from peregrine.edge.qdrant import QdrantProtocol


class Shout(BaseModel):
    text: str
    times: int = 1


class Echo(Protocol):
    name = "echo"
    prefix = "/v1"

    def operations(self) -> list[Operation]:
        async def shout(call: Call) -> Any:
            body: Shout = call.body
            return {"said": (body.text.upper() + " ") * body.times}

        async def count(call: Call) -> Any:
            async def events() -> AsyncIterator[Any]:
                for i in range(int(call.path["n"])):
                    yield {"i": i}
                    await asyncio.sleep(0)
                yield "[DONE]"

            return EventStream(events())

        async def fail(call: Call) -> Any:
            raise HttpError(418, "not a teapot")

        return [
            Operation("POST", "/shout", "shout", "echo", "Shout back", shout, Access.WRITE,
                      body=Shout),
            Operation("GET", "/count/{n}", "count", "echo", "Count as events", count),
            Operation("GET", "/fail", "fail", "echo", "Fail", fail),
        ]

    def success(self, result: bytes, fmt: Format, seconds: float) -> bytes:
        return b'{"data":' + result + b"}"

    def error(self, status: int, message: str, seconds: float) -> bytes:
        return orjson.dumps({"error": {"message": message, "code": status}})


@pytest.fixture
def client(tmp_path: Path) -> Iterator[httpx.AsyncClient]:
    settings = build(bootstrap.Settings, {"data": str(tmp_path), "stream.nats_port": 0,
                                          "http.api_key": "full",
                                          "http.read_only_api_key": "ro",
                                          "llm.enabled": False})  # Echo takes /v1
    process = bootstrap.build(settings, protocols=[
        *bootstrap.PROTOCOLS,  # Qdrant's REST at /
        lambda faces, s: Echo(),  # the one registration line a new protocol needs
    ])
    process.app.runtime.ready = True
    transport = httpx.ASGITransport(app=process.app)  # type: ignore[arg-type]
    yield httpx.AsyncClient(transport=transport, base_url="http://edge")
    process.app.close()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_protocols_are_mounted_side_by_side(client: httpx.AsyncClient) -> None:
    async def go() -> None:
        full = {"api-key": "full"}
        r = await client.post("/v1/shout", json={"text": "hi", "times": 2}, headers=full)
        assert r.status_code == 200 and r.json() == {"data": {"said": "HI HI "}}
        assert r.headers["x-request-id"]
        r = await client.get("/collections", headers=full)
        assert r.json()["status"] == "ok"  # Qdrant's envelope at the root
        assert (await client.get("/healthz")).status_code == 200

    run(go())


def test_keys_apply_to_every_protocol_alike(client: httpx.AsyncClient) -> None:
    async def go() -> None:
        r = await client.post("/v1/shout", json={"text": "x"})
        assert r.status_code == 401 and r.json()["error"]["code"] == 401
        r = await client.post("/v1/shout", json={"text": "x"}, headers={"api-key": "ro"})
        assert r.status_code == 403  # a write with the read-only key
        r = await client.get("/v1/count/2", headers={"authorization": "Bearer ro"})
        assert r.status_code == 200
        r = await client.put("/collections/c", json={"vectors": {"size": 2, "distance": "Dot"}},
                             headers={"api-key": "ro"})
        assert r.status_code == 403 and "error" in r.json()["status"]

    run(go())


def test_each_protocol_answers_errors_in_its_own_format(client: httpx.AsyncClient) -> None:
    async def go() -> None:
        key = {"api-key": "full"}
        r = await client.get("/v1/fail", headers=key)
        assert r.status_code == 418 and r.json() == {"error": {"message": "not a teapot",
                                                               "code": 418}}
        r = await client.get("/v1/nowhere", headers=key)
        assert r.status_code == 404 and r.json()["error"]["code"] == 404
        r = await client.post("/v1/shout", json={"times": "x"}, headers=key)
        assert r.status_code == 400 and "text" in r.json()["error"]["message"]
        r = await client.get("/nowhere", headers=key)
        assert r.status_code == 404 and "error" in r.json()["status"]  # Qdrant's shape

    run(go())


def test_server_sent_events_stream_one_event_per_item(client: httpx.AsyncClient) -> None:
    async def go() -> None:
        async with client.stream("GET", "/v1/count/3", headers={"api-key": "ro"}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == "text/event-stream"
            text = "".join([chunk async for chunk in r.aiter_text()])
        events = [e.removeprefix("data: ") for e in text.strip().split("\n\n")]
        assert events == ['{"i":0}', '{"i":1}', '{"i":2}', "[DONE]"]

    run(go())


def test_adding_a_protocol_needs_no_edit_to_the_edge() -> None:
    """The edge imports no protocol and no face: only the composition root names them
    (the import contract in .importlinter checks the same in CI)."""
    root = Path(bootstrap.__file__).parent / "edge" / "http"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("peregrine.edge.qdrant", "peregrine.vector")), (
                    path.name, node.module)
    assert QdrantProtocol.prefix == "" and Echo.prefix == "/v1"


def test_an_event_stream_stops_when_the_client_leaves(tmp_path: Path) -> None:
    """uvicorn does not fail sends to a gone client: the edge watches for the
    disconnect and closes the generator (no tokens made for nobody)."""
    produced = {"n": 0, "closed": False}

    class Ticks(Protocol):
        name, prefix = "ticks", "/t"

        def operations(self) -> list[Operation]:
            async def ticks(call: Call) -> Any:
                async def events() -> AsyncIterator[Any]:
                    try:
                        while True:
                            produced["n"] += 1
                            yield {"n": produced["n"]}
                            await asyncio.sleep(0.01)
                    finally:
                        produced["closed"] = True

                return EventStream(events())

            return [Operation("GET", "/ticks", "ticks", "t", "Ticks", ticks)]

    settings = build(bootstrap.Settings, {"data": str(tmp_path), "stream.nats_port": 0})
    process = bootstrap.build(settings, protocols=[lambda faces, s: Ticks()])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(
        process.app, host="127.0.0.1", port=port, log_config=None, lifespan="on",
        http=guarded_protocol(ConnectionLimits(10, 30, 100), None)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"GET /t/ticks HTTP/1.1\r\nhost: x\r\n\r\n")
        assert b"text/event-stream" in client.recv(4096)
        client.close()
        time.sleep(0.5)
        assert produced["closed"]
        stopped_at = produced["n"]
        time.sleep(0.3)
        assert produced["n"] == stopped_at
    finally:
        server.should_exit = True
        thread.join(10)


def test_work_left_running_keeps_reads_off_the_event_loop(tmp_path: Path) -> None:
    """While work answered with 202 still runs (a restore, say), a read that would wait
    on it must not run inline and hold the event loop."""
    lock = threading.Lock()

    class Busy(Protocol):
        name, prefix = "busy", "/b"

        def __init__(self) -> None:
            self.ops = self.make()

        def operations(self) -> list[Operation]:
            return self.ops

        def make(self) -> list[Operation]:
            def hold() -> None:
                with lock:
                    time.sleep(0.6)

            def read() -> str:
                with lock:
                    return "read"

            async def spawn(call: Call) -> Any:
                call.spawn(hold)
                return Accepted()

            async def locked(call: Call) -> Any:
                return await call.run(read)

            return [Operation("POST", "/spawn", "spawn", "b", "Spawn", spawn),
                    Operation("GET", "/locked", "locked", "b", "Locked", locked, inline=True)]

    busy = Busy()
    busy.ops[1].engine_ewma = 0.0  # it has shown itself cheap: eligible to run inline
    settings = build(bootstrap.Settings, {"data": str(tmp_path), "stream.nats_port": 0})
    process = bootstrap.build(settings, protocols=[lambda faces, s: busy])
    process.app.runtime.ready = True
    transport = httpx.ASGITransport(app=process.app)  # type: ignore[arg-type]

    async def go() -> float:
        async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
            assert (await client.post("/b/spawn")).status_code == 202
            await asyncio.sleep(0.05)  # the spawned work holds the lock now
            t0 = time.perf_counter()
            reading = asyncio.ensure_future(client.get("/b/locked"))
            await asyncio.sleep(0)  # the read starts first
            assert (await client.get("/healthz")).status_code == 200
            waited = time.perf_counter() - t0
            assert (await reading).status_code == 200
            return waited

    try:
        assert run(go()) < 0.3
    finally:
        process.app.close()
