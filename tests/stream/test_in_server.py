"""A pipeline run by `peregrine serve` itself ([stream] pipelines): it writes through
the server's vector store front door, and stops before the store closes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import nats

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "edge"))
from apiutil import ServerProcess  # noqa: E402


def test_serve_runs_a_pipeline_in_process(tmp_path: Path) -> None:
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    server = ServerProcess(tmp_path / "data", "--stream-pipelines",
                           "examples.recommendations:pipeline", env=env)
    try:
        url = (tmp_path / "data" / "nats.url").read_text().strip()

        async def drive() -> list[Any]:
            nc = await nats.connect(url)
            got: list[Any] = []
            arrived = asyncio.Event()

            async def on_message(msg: Any) -> None:
                got.append(json.loads(msg.data))
                arrived.set()

            await nc.subscribe("recommendations.>", cb=on_message)
            for i, product in enumerate(["p1", "p2", "p1", "p3"]):
                arrived.clear()
                click = {"event_id": f"e{i}", "user_id": "u1", "product_id": product,
                         "description": f"product {product}: a blue kettle", "ts": i}
                await nc.publish("clicks", json.dumps(click).encode())
                await asyncio.wait_for(arrived.wait(), 60)
            await nc.close()
            return got

        got = asyncio.run(drive())
        assert [g["event_id"] for g in got] == ["e0", "e1", "e2", "e3"]
        assert got[3]["product_ids"] and "p3" not in got[3]["product_ids"]
        count = httpx.post(server.url + "/collections/products/points/count",
                           json={"exact": True}).json()["result"]["count"]
        assert count == 3
        pipes = httpx.get(server.url + "/streams/pipelines").json()["result"]
        assert [p["name"] for p in pipes] == ["recommendations"]
    finally:
        server.stop()
    assert "Traceback" not in server.log()
