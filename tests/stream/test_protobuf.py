"""The optional protobuf codec, end to end on a real nats-server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from streamutil import FAST, connect, drained, eventually, running

from peregrine.runtime.nats import EmbeddedNats
from peregrine.stream.deadletter import DeadLetters
from peregrine.stream.service import Pipeline, protobuf

struct_pb2 = pytest.importorskip("google.protobuf.struct_pb2")


def test_protobuf_events_in_and_out(nats_server: EmbeddedNats) -> None:
    Struct = struct_pb2.Struct
    codec = protobuf(Struct)

    async def main() -> None:
        nc, js = await connect(nats_server.url)
        got: list[Any] = []

        async def collect(msg: Any) -> None:
            got.append(codec.decode(msg.data))

        await nc.subscribe("pb.out.>", cb=collect)
        pipeline = (Pipeline("pb", source="pb.in", codec=codec, key="user")
                    .map(lambda d: {**d, "total": d["price"] * d["qty"]})
                    .emit("pb.out.{user}", fields=["user", "total"], codec=codec))
        async with running(pipeline, nats_server.url, None, FAST):
            for user, price, qty in (("ann", 2.5, 4), ("bob", 1.0, 3)):
                message = Struct()
                message.update({"user": user, "price": price, "qty": qty})
                await js.publish("pb.in", message.SerializeToString())
            await js.publish("pb.in", b"\xff\xff not protobuf")
            await drained(js, "PG_PB", "pb")
            await eventually(lambda: len(got) == 2, 10)
        assert sorted((g["user"], g["total"]) for g in got) == [("ann", 10.0), ("bob", 3.0)]
        letters = await DeadLetters(js, FAST).read("pb")
        assert [d.stage for d in letters] == ["decode"]
        await nc.close()

    asyncio.run(main())
