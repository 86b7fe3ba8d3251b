"""Re-embedding: a new pipeline version re-processes the stream into a new
collection while the old version serves, then readers switch through the alias."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streamutil import FAST, connect, drained, eventually, publish, running

from peregrine.runtime.nats import EmbeddedNats
from peregrine.stream.pipeline import Pipeline
from peregrine.stream.sinks import LocalVectorSink
from peregrine.vector.service import ReadOptions, VectorService

pytest.importorskip("onnxruntime")

from peregrine.embed import TextEmbedder


def _pipeline(version: str, embedder: Any, out: str) -> Pipeline:
    return (Pipeline("notes", source="in.notes", key="id", event_id="id", version=version)
            .embed("text", embedder=embedder)
            .upsert("notes", id="id", payload=["text"])
            .emit(out + ".{id}", fields=["id"]))


def _target(vector: VectorService) -> str | None:
    return next((a.collection for a in vector.list_aliases() if a.alias == "notes"), None)


def test_new_version_backfills_then_switches_readers_atomically(
        nats_server: EmbeddedNats, tmp_path: Path) -> None:
    vector = VectorService.open(tmp_path / "data")
    v1_model = TextEmbedder()  # the int8 graph
    v2_model = TextEmbedder(int8=False)  # "a new model version": the float32 graph
    texts = [f"note {i} about {'gardening' if i % 2 else 'astronomy'} and tea" for i in range(60)]

    async def main() -> None:
        nc, js = await connect(nats_server.url)
        emitted: dict[str, list[int]] = {"v1": [], "v2": []}

        async def on_v1(msg: Any) -> None:
            emitted["v1"].append(int(msg.subject.rsplit(".", 1)[1]))

        async def on_v2(msg: Any) -> None:
            emitted["v2"].append(int(msg.subject.rsplit(".", 1)[1]))

        await nc.subscribe("out1.>", cb=on_v1)
        await nc.subscribe("out2.>", cb=on_v2)
        sink = LocalVectorSink(vector)
        first = [{"id": i, "text": texts[i]} for i in range(40)]
        v1 = _pipeline("v1", v1_model, "out1")
        async with running(v1, nats_server.url, sink, FAST):
            await publish(js, "in.notes", first)
            await drained(js, "PG_NOTES", "notes_v1")
            # A first deployment: the alias is pointed once the collection exists.
            await eventually(lambda: _target(vector) == "notes_v1", 10)
        assert vector.count("notes", None) == 40
        assert sorted(emitted["v1"]) == list(range(40))

        # Readers keep searching through the alias for the whole switch.
        errors: list[BaseException] = []
        served: list[int] = []
        done = threading.Event()
        query = v1_model.encode(["astronomy"])[0]

        def read() -> None:
            while not done.is_set():
                try:
                    served.append(vector.count("notes", None))
                    vector.search("notes", query, ReadOptions(limit=3))
                except BaseException as exc:
                    errors.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            v2 = _pipeline("v2", v2_model, "out2")
            async with running(v1, nats_server.url, LocalVectorSink(vector), FAST), \
                    running(v2, nats_server.url, LocalVectorSink(vector), FAST) as w2:
                assert w2.backfilling  # the alias names v1's collection
                await publish(js, "in.notes", [{"id": i, "text": texts[i]}
                                               for i in range(40, 60)])
                await drained(js, "PG_NOTES", "notes_v1")
                await drained(js, "PG_NOTES", "notes_v2")
                await eventually(lambda: _target(vector) == "notes_v2", 10)
                assert not w2.backfilling
                await publish(js, "in.notes", [{"id": 60, "text": "a late note on tea"}])
                await drained(js, "PG_NOTES", "notes_v2")
                await eventually(lambda: 60 in emitted["v2"], 10)
        finally:
            done.set()
            reader.join()
        await nc.close()
        assert not errors, errors[:3]
        assert served and set(served) <= {40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52,
                                          53, 54, 55, 56, 57, 58, 59, 60, 61}
        # Everything is in the new collection, embedded by the new model.
        assert vector.count("notes", None) == vector.count("notes_v2", None) == 61
        stored = vector.retrieve("notes_v2", [5], False, True)[0].vector
        np.testing.assert_allclose(stored, v2_model.encode([texts[5]])[0], atol=1e-5)
        # History was re-embedded, not re-acted on: v2 emitted only what came later.
        assert emitted["v2"] and min(emitted["v2"]) >= 40
        assert sorted(set(emitted["v1"])) == list(range(61))

    try:
        asyncio.run(main())
    finally:
        vector.close()
