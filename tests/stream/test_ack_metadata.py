"""Reading sequence, deliveries and publish time from a JetStream reply subject."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import nats

from peregrine.runtime.nats import EmbeddedNats
from peregrine.stream.worker import ack_metadata


def test_matches_nats_py_metadata_on_real_messages(nats_server: EmbeddedNats) -> None:
    async def main() -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await js.add_stream(name="S", subjects=["s"])
        for _ in range(3):
            await js.publish("s", b"x")
        sub = await js.pull_subscribe("s", durable="d")
        for msg in await sub.fetch(3):
            md = msg.metadata
            seq, delivered, at = ack_metadata(msg)
            assert (seq, delivered) == (md.sequence.stream, md.num_delivered)
            assert abs(at - md.timestamp.timestamp()) < 1e-5
        await nc.close()

    asyncio.run(main())


def test_domain_form() -> None:
    # $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<seq>.<cseq>.<ns>...
    msg = SimpleNamespace(reply="$JS.ACK.hub.ACCHASH.S.d.3.42.40.1796068422746125638.0.tok")
    seq, delivered, at = ack_metadata(msg)
    assert (seq, delivered) == (42, 3) and abs(at - 1796068422.746125638) < 1e-6
