"""The reference order-validation service: the rules for every field, malformed
buffers, and (on a real nats-server) replies, error headers, events, the
positions projection and its idempotence."""

from __future__ import annotations

import asyncio
import math
import random
from pathlib import Path
from typing import Any

import nats
import orjson
from examples import orders
from examples.finance import Order as generated

from peregrine.loadgen.mq import build_order, make_orders
from peregrine.mq.service import MqSettings, Worker
from peregrine.runtime.nats import EmbeddedNats
from peregrine.state.service import StateService, StateSettings


def _order(**kw: Any) -> bytes:
    base: dict[str, Any] = {"order_id": 7, "symbol": "AAPL", "price": 189.5, "quantity": 10,
                            "side": 0, "timestamp": 1_700_000_000}
    base.update(kw)
    return build_order(**base)


def _valid(buf: bytes, allowed: frozenset[bytes] | None = None) -> bool:
    _, symbol, price, quantity, side, _ = orders.read_order(memoryview(buf))
    return orders.is_valid(symbol, price, quantity, side, allowed)


def test_the_rules_for_every_field() -> None:
    assert _valid(_order())
    assert _valid(_order(side=1, symbol="BRK.B")) and _valid(_order(symbol="BTC-USD"))
    assert _valid(_order(symbol="A")) and _valid(_order(symbol="ABCDEFGHIJKL"))  # 1 and 12
    for price in (0.0, -1.0, math.nan, math.inf, -math.inf):
        assert not _valid(_order(price=price)), price
    assert _valid(_order(price=1e-9))
    assert not _valid(_order(quantity=0))
    assert _valid(_order(quantity=1)) and _valid(_order(quantity=2**32 - 1))
    for side in (2, 7, -1, 127, -128):
        assert not _valid(_order(side=side)), side
    for symbol in ("", "aapl", "ABCDEFGHIJKLM", "A B", "A_B", "€UR", "A\x00"):
        assert not _valid(_order(symbol=symbol)), symbol
    assert not _valid(_order(symbol=None))  # absent: empty
    assert not _valid(build_order(1, "AAPL", 0.0, 0, 0, 0))  # defaults reject
    allowed = frozenset({b"AAPL", b"MSFT"})
    assert _valid(_order(symbol="MSFT"), allowed) and not _valid(_order(symbol="NVDA"), allowed)


def test_the_reader_agrees_with_flatc_generated_code() -> None:
    for buf in make_orders(500, 0.0, seed=3):
        o = generated.Order.GetRootAs(buf, 0)
        assert orders.read_order(memoryview(buf)) == (
            o.Id(), o.Symbol() or b"", o.Price(), o.Quantity(), o.Side(), o.Timestamp())


def test_malformed_buffers_are_refused_never_crash() -> None:
    rng = random.Random(5)
    good = _order()
    cases = [b"", b"\x00", b"\xff" * 3, b"\xff" * 64, good[:5], good[:-3]]
    cases += [rng.randbytes(rng.randrange(1, 80)) for _ in range(2000)]
    for _ in range(2000):  # one byte of a real order flipped
        buf = bytearray(good)
        buf[rng.randrange(len(buf))] = rng.randrange(256)
        cases.append(bytes(buf))
    for buf in cases:
        try:
            out = orders.read_order(memoryview(buf))
        except orders.NotAnOrder:
            continue
        assert len(out) == 6 and isinstance(out[1], bytes)  # in bounds, whatever it says


def _settings(server: EmbeddedNats) -> MqSettings:
    return MqSettings(nats=server.url)


def test_the_service_on_nats(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async def main() -> None:
        worker = Worker(orders.service, _settings(nats_server), data_dir=str(tmp_path))
        await worker.start()
        nc = await nats.connect(nats_server.url)
        try:
            accepted = [_order(symbol="AAPL", side=0, quantity=10),
                        _order(symbol="AAPL", side=1, quantity=3),
                        _order(symbol="MSFT", side=1, quantity=5)]
            for buf in accepted:
                assert (await nc.request("orders.in", buf, timeout=5)).data == b"\x01"
            assert (await nc.request("orders.in", _order(quantity=0))).data == b"\x00"
            bad = await nc.request("orders.in", b"\x01\x02\x03", timeout=5)
            assert bad.headers is not None and bad.headers["Nats-Service-Error-Code"] == "400"
            assert "not a finance.Order" in bad.headers["Nats-Service-Error"]
            # Events: one per accepted order, in stream ORDERS.
            js = nc.jetstream()
            for _ in range(100):
                if (await js.stream_info("ORDERS")).state.messages == 3:
                    break
                await asyncio.sleep(0.05)
            assert (await js.stream_info("ORDERS")).state.messages == 3
            # The projection: net positions per symbol.
            async def position(symbol: str) -> float:
                r = await nc.request("orders.positions", symbol.encode(), timeout=5)
                return float(orjson.loads(r.data)["position"])

            for _ in range(100):
                if await position("AAPL") == 7 and await position("MSFT") == -5:
                    break
                await asyncio.sleep(0.05)
            assert (await position("AAPL"), await position("MSFT")) == (7, -5)
            assert await position("NVDA") == 0
            r = await nc.request("orders.positions", b"bad symbol", timeout=5)
            assert r.headers is not None and r.headers["Nats-Service-Error-Code"] == "400"
        finally:
            await nc.close()
            assert await worker.drain()

    asyncio.run(main())
    # Replaying the whole stream into the same ledger changes nothing; rebuilding
    # the ledger from the stream gives the same positions.
    async def replay() -> list[tuple[int, bytes]]:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        sub = await js.pull_subscribe("orders.accepted", durable=None)
        msgs = await sub.fetch(10, timeout=2)
        await nc.close()
        return [(m.metadata.sequence.stream, m.data) for m in msgs]

    events = asyncio.run(replay())
    state = StateService.open(StateSettings(), tmp_path)
    try:
        before = state.ledger.all(orders.POSITIONS)
        assert before == {"AAPL": 7.0, "MSFT": -5.0}
        for seq, data in events:
            orders.project(state, seq, data)
        assert state.ledger.all(orders.POSITIONS) == before
        state.ledger.reset(orders.POSITIONS)
        for seq, data in events + events:  # rebuilt, and replayed twice over
            orders.project(state, seq, data)
        assert state.ledger.all(orders.POSITIONS) == before
    finally:
        state.close()


def test_generated_code_is_committed() -> None:
    root = Path(__file__).resolve().parents[2]
    assert (root / "schemas" / "order.fbs").read_text().strip() == (
        "namespace finance; enum Side : byte { BUY = 0, SELL = 1 } table Order { id: ulong; "
        "symbol: string; price: double; quantity: uint; side: Side; timestamp: ulong; } "
        "root_type Order;")
    assert (root / "examples" / "finance" / "Order.py").is_file()
    assert generated.Order is not None
