"""Pipeline stages against a real nats-server and a real vector store (in process)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import orjson
import pytest
from streamutil import FAST, connect, drained, eventually, publish, running

from peregrine.runtime.nats import EmbeddedNats
from peregrine.stream import event as hdr
from peregrine.stream.deadletter import DeadLetters
from peregrine.stream.pipeline import PermanentError, Pipeline
from peregrine.stream.sinks import LocalVectorSink
from peregrine.stream.stages import point_id
from peregrine.vector.service import VectorService

SCHEMA = {"type": "object", "required": ["id", "vec"],
          "properties": {"id": {"type": "integer"}, "vec": {"type": "array"}}}


@pytest.fixture
def vector(tmp_path: Path) -> Any:
    service = VectorService.open(tmp_path / "data")
    service.create_collection("docs", 4, "dot")
    yield service
    service.close()


def _vec(i: int) -> list[float]:
    return [float(i), 1.0, 0.0, 0.0]


def test_stages_upsert_query_emit_and_poison(nats_server: EmbeddedNats, vector: Any) -> None:
    async def main() -> None:
        nc, js = await connect(nats_server.url)
        results: list[Any] = []

        async def collect(msg: Any) -> None:
            results.append(msg)

        sub = await nc.subscribe("out.>", cb=collect)
        pipeline = (Pipeline("docs", source="in.docs", key="id")
                    .validate(SCHEMA)
                    .map(lambda d: None if d.get("skip") else {**d, "double": d["id"] * 2})
                    .upsert("docs", id="id", vector="vec", payload=["double"])
                    .query("docs", vector="vec", k=2, into="near")
                    .emit("out.{id}", fields=["id", "near"]))
        async with running(pipeline, nats_server.url, LocalVectorSink(vector)):
            await publish(js, "in.docs", [{"id": i, "vec": _vec(i)} for i in range(10)],
                          headers={hdr.TRACEPARENT: hdr.new_traceparent("a" * 32)})
            await publish(js, "in.docs", [{"id": 99, "vec": _vec(9), "skip": True}])
            await publish(js, "in.docs", [b"{not json", b'{"id": "x", "vec": []}'], raw=True)
            await drained(js, "PG_DOCS", "docs")
            await nc.flush()
            await asyncio.sleep(0.2)
        assert vector.count("docs", None) == 10
        records = {r.id: r for r in vector.retrieve("docs", list(range(10)), True, False)}
        assert records[3].payload["double"] == 6 and records[3].payload["_seq"] == 4
        assert len(results) == 10
        first = orjson.loads(results[0].data)
        assert set(first) == {"id", "near"} and len(first["near"]) == 2
        # The trace id of the event is the trace id of its result.
        assert all(hdr.trace_id_of(m.headers[hdr.TRACEPARENT]) == "a" * 32 for m in results)
        letters = await DeadLetters(js, FAST).read("docs")
        assert [(d.stage, d.data) for d in letters] == [
            ("decode", b"{not json"), ("validate", b'{"id": "x", "vec": []}')]
        assert "id" in letters[1].error and letters[1].subject == "in.docs"
        await sub.unsubscribe()
        await nc.close()

    asyncio.run(main())


def test_redelivery_and_replay_never_duplicate_or_go_back(nats_server: EmbeddedNats,
                                                          vector: Any) -> None:
    """Per-key order across failures, retries with backoff, and the dead-letter replay."""
    failing = {"on": True}

    def flaky(d: dict[str, Any]) -> dict[str, Any]:
        if d["id"] == 1 and d["v"] == 1 and failing["on"]:
            raise PermanentError("refused")
        if d["id"] == 2 and d["v"] == 1 and failing["on"]:
            raise ConnectionError("store blinked")  # transient: retried
        return d

    async def main() -> None:
        nc, js = await connect(nats_server.url)
        pipeline = (Pipeline("keys", source="in.keys", key="id", retry_backoff_s=(0.05,),
                             max_deliver=3)
                    .map(flaky)
                    .upsert("docs", id="id", vector="vec", payload=["v"]))
        async with running(pipeline, nats_server.url, LocalVectorSink(vector)):
            # id 1: v1 refused (dead letter), v2 applied. id 2: v1 fails 3 times
            # (dead letter), v2 behind it in the same batch is held, then applied.
            await publish(js, "in.keys", [{"id": 1, "v": 1, "vec": _vec(1)},
                                          {"id": 2, "v": 1, "vec": _vec(2)},
                                          {"id": 2, "v": 2, "vec": _vec(2)},
                                          {"id": 1, "v": 2, "vec": _vec(1)}])
            def versions() -> dict[Any, Any]:
                return {r.id: r.payload["v"] for r in vector.retrieve("docs", [1, 2], True,
                                                                      False)}

            async def two_letters() -> Any:
                found = await DeadLetters(js, FAST).read("keys")
                return found if len(found) == 2 else None

            letters = await eventually(two_letters)
            await drained(js, "PG_KEYS", "keys")
            assert versions() == {1: 2, 2: 2}
            assert sorted((d.stage, orjson.loads(d.data)["id"]) for d in letters) == [
                ("map", 1), ("map", 2)]
            by_id = {orjson.loads(d.data)["id"]: d for d in letters}
            assert by_id[2].deliveries == 3 and "blinked" in by_id[2].error
            # A replay of the old versions: applied by the pipeline, but never over v2.
            failing["on"] = False
            assert await DeadLetters(js, FAST).replay("keys") == 2
            await asyncio.sleep(0.3)
            await drained(js, "PG_KEYS", "keys")
            assert versions() == {1: 2, 2: 2}
            assert await DeadLetters(js, FAST).read("keys") == []
        await nc.close()

    asyncio.run(main())


def test_msgpack_events_with_binary_vectors_and_namespaces(nats_server: EmbeddedNats,
                                                           vector: Any) -> None:
    async def main() -> None:
        nc, js = await connect(nats_server.url)
        pipeline = (Pipeline("mp", source="in.mp", codec="msgpack")
                    .upsert("docs", id="id", vector="vec", namespace="tenant",
                            payload=["id"]))
        async with running(pipeline, nats_server.url, LocalVectorSink(vector)):
            for tenant in ("a", "b"):
                for i in range(5):
                    body = msgpack.packb({"id": i, "tenant": tenant,
                                          "vec": np.asarray(_vec(i), "<f4").tobytes()})
                    await js.publish("in.mp", body)
            await drained(js, "PG_MP", "mp")
        assert vector.count("docs", None) == 10
        assert vector.count("docs", {"must": [{"key": "tenant", "match": {"value": "a"}}]}) == 5
        assert point_id(1, "a") != point_id(1, "b")
        await nc.close()

    asyncio.run(main())


def test_start_up_is_idempotent_and_two_workers_share_the_work(
        nats_server: EmbeddedNats, vector: Any) -> None:
    async def main() -> None:
        nc, js = await connect(nats_server.url)
        seen: list[int] = []

        def note(d: dict[str, Any]) -> dict[str, Any]:
            seen.append(d["id"])
            return d

        def make() -> Pipeline:
            return (Pipeline("shared", source="in.shared", batch_size=8)
                    .map(note).upsert("docs", id="id", vector="vec"))

        sink = LocalVectorSink(vector)
        async with running(make(), nats_server.url, sink), \
                running(make(), nats_server.url, sink):
            await publish(js, "in.shared", [{"id": i, "vec": _vec(i)} for i in range(200)])
            await drained(js, "PG_SHARED", "shared")
        assert sorted(seen) == list(range(200))
        assert vector.count("docs", None) == 200
        info = await js.stream_info("PG_SHARED")
        assert info.config.subjects == ["in.shared"]
        await nc.close()

    asyncio.run(main())


def test_embed_stage_with_the_real_model(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    """Text events embedded by the bundled model, stored, and found by their text."""
    pytest.importorskip("sentence_transformers")
    from peregrine.embed import TextEmbedder

    service = VectorService.open(tmp_path / "text")
    service.create_collection("notes", 384, "cosine")
    texts = ["the cat sat on the mat", "stock prices fell sharply today",
             "a recipe for sourdough bread", "the rocket launched into orbit"]

    async def main() -> None:
        nc, js = await connect(nats_server.url)
        pipeline = (Pipeline("notes", source="in.notes")
                    .embed("text").upsert("notes", id="id", payload=["text"])
                    .query("notes", k=1, into="nearest"))
        async with running(pipeline, nats_server.url, LocalVectorSink(service)):
            await publish(js, "in.notes", [{"id": i, "text": t} for i, t in enumerate(texts)])
            await drained(js, "PG_NOTES", "notes")
        await nc.close()

    asyncio.run(main())
    embedder = TextEmbedder()
    query = embedder.encode(["bread baking"])[0]
    from peregrine.vector.service import ReadOptions

    hits = service.search_batch("notes", [(query, ReadOptions(limit=1, with_payload=True))])[0]
    assert hits[0].payload["text"] == "a recipe for sourdough bread"
    service.close()


def test_enrich_from_a_kv_bucket_and_pydantic_validation(nats_server: EmbeddedNats,
                                                         vector: Any) -> None:
    from pydantic import BaseModel

    class Click(BaseModel):
        id: int
        user: str
        vec: list[float]

    async def main() -> None:
        nc, js = await connect(nats_server.url)
        kv = await js.create_key_value(bucket="users")
        await kv.put("u1", orjson.dumps({"plan": "gold"}))
        pipeline = (Pipeline("clicks", source="in.clicks")
                    .validate(Click)
                    .enrich(into="profile", key="user", bucket="users", ttl_s=60)
                    .map(lambda d: {**d, "plan": (d["profile"] or {}).get("plan", "none")})
                    .upsert("docs", id="id", vector="vec", payload=["plan"]))
        async with running(pipeline, nats_server.url, LocalVectorSink(vector)) as worker:
            await publish(js, "in.clicks", [
                {"id": 1, "user": "u1", "vec": _vec(1)}, {"id": 2, "user": "u2", "vec": _vec(2)},
                {"id": 3, "user": "u1", "vec": _vec(3)}, {"id": 4, "user": 7}])
            await drained(js, "PG_CLICKS", "clicks")
            enrich = next(r for r in worker.runners if r.name == "enrich")
            assert enrich.cache.misses == 2  # u1 once (then cached), u2 once
        plans = {r.id: r.payload["plan"] for r in vector.retrieve("docs", [1, 2, 3], True,
                                                                  False)}
        assert plans == {1: "gold", 2: "none", 3: "gold"}
        letters = await DeadLetters(js, FAST).read("clicks")
        assert [d.stage for d in letters] == ["validate"]
        await nc.close()

    asyncio.run(main())
