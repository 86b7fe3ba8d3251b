"""The reference message-queue service: order validation, with CQRS positions.

Run it against any NATS server with JetStream (``peregrine serve`` starts one)::

    peregrine mq examples.orders:service --nats nats://127.0.0.1:4222

- ``orders.in`` (queue group ``order-validator``): the request is a FlatBuffers
  ``finance.Order`` (``schemas/order.fbs``). The reply is one byte: ``0x01``
  accepted, ``0x00`` rejected. A buffer that is not an ``Order`` gets an error
  reply (``Nats-Service-Error-Code: 400``).
- Every accepted order is published, after the reply, as an event on
  ``orders.accepted`` (stream ``ORDERS``).
- A projection reads ``ORDERS`` into per-symbol net positions. It keeps them in
  the state face's ledger under ``--data``, applying each event once by its
  stream sequence, so a replay changes nothing.
- ``orders.positions`` answers a symbol's position as JSON:
  ``{"symbol", "position"}``. ``ORDERS_PROJECTION=off`` makes a worker that only
  validates (it neither projects nor serves ``orders.positions``): run
  validators like that beside one worker that projects.

Rules: the price is a finite number > 0; the quantity is not 0; the side is BUY
(0) or SELL (1); the symbol is 1-12 characters of A-Z, 0-9, ``.`` and ``-``;
and, when ``ORDERS_INSTRUMENTS`` lists symbols (comma separated), it is one of
them.

The request is read in place. A bounds-checked walk of the FlatBuffers layout
(root offset, vtable, fields, string) runs over the ``memoryview`` with
``struct``, so a malformed buffer can never index past its end. The generated
``finance.Order`` accessors read the same fields: the tests check that both
agree, and producers use the generated builder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import struct
from pathlib import Path
from typing import Any

import orjson

from peregrine.mq.service import Service, ServiceError, Worker
from peregrine.state.service import StateService, StateSettings

log = logging.getLogger("examples.orders")
ACCEPTED, REJECTED = b"\x01", b"\x00"
EVENTS_STREAM, EVENTS_SUBJECT = "ORDERS", "orders.accepted"
POSITIONS = "positions"

_SYMBOL = re.compile(rb"[A-Z0-9.\-]{1,12}")
_U16 = struct.Struct("<H").unpack_from
_U32 = struct.Struct("<I").unpack_from
_I32 = struct.Struct("<i").unpack_from
_U64 = struct.Struct("<Q").unpack_from
_F64 = struct.Struct("<d").unpack_from
_I8 = struct.Struct("<b").unpack_from
_SIZES = (8, 4, 8, 4, 1, 8)  # id, symbol (offset), price, quantity, side, timestamp
_ID, _SYMBOL_F, _PRICE, _QUANTITY, _SIDE, _TIMESTAMP = range(6)


class NotAnOrder(ValueError):
    """The bytes are not a well-formed ``finance.Order``."""


def read_order(buf: memoryview) -> tuple[int, bytes, float, int, int, int]:
    """(id, symbol, price, quantity, side, timestamp) of the ``Order`` in ``buf``, with
    the schema's defaults for absent fields; ``NotAnOrder`` when any offset points
    outside the buffer."""
    n = len(buf)
    try:
        if n < 12:
            raise NotAnOrder("shorter than the smallest table")
        table = _U32(buf, 0)[0]
        if table + 4 > n:
            raise NotAnOrder("the root offset points past the end")
        vtable = table - _I32(buf, table)[0]
        if vtable < 0 or vtable + 4 > n:
            raise NotAnOrder("the vtable is outside the buffer")
        vsize, tsize = _U16(buf, vtable)[0], _U16(buf, vtable + 2)[0]
        if vsize < 4 or vsize & 1 or vtable + vsize > n or tsize < 4 or table + tsize > n:
            raise NotAnOrder("the vtable or table size is out of bounds")
        fields = [0] * 6
        for i in range(min(6, (vsize - 4) // 2)):
            off = _U16(buf, vtable + 4 + 2 * i)[0]
            if off:
                if off + _SIZES[i] > tsize:
                    raise NotAnOrder(f"field {i} lies outside its table")
                fields[i] = table + off
        symbol = b""
        if fields[_SYMBOL_F]:
            at = fields[_SYMBOL_F]
            start = at + _U32(buf, at)[0]
            if start + 4 > n:
                raise NotAnOrder("the symbol points past the end")
            length = _U32(buf, start)[0]
            if start + 4 + length > n:
                raise NotAnOrder("the symbol runs past the end")
            symbol = bytes(buf[start + 4:start + 4 + length])
        return (_U64(buf, fields[_ID])[0] if fields[_ID] else 0, symbol,
                _F64(buf, fields[_PRICE])[0] if fields[_PRICE] else 0.0,
                _U32(buf, fields[_QUANTITY])[0] if fields[_QUANTITY] else 0,
                _I8(buf, fields[_SIDE])[0] if fields[_SIDE] else 0,
                _U64(buf, fields[_TIMESTAMP])[0] if fields[_TIMESTAMP] else 0)
    except struct.error:
        raise NotAnOrder("truncated") from None


def instruments() -> frozenset[bytes] | None:
    listed = os.environ.get("ORDERS_INSTRUMENTS", "")
    names = [s.strip().encode() for s in listed.split(",") if s.strip()]
    return frozenset(names) if names else None


_ALLOWED = instruments()


def is_valid(symbol: bytes, price: float, quantity: int, side: int,
             allowed: frozenset[bytes] | None = _ALLOWED) -> bool:
    return (price > 0 and math.isfinite(price) and quantity != 0 and side in (0, 1)
            and _SYMBOL.fullmatch(symbol) is not None
            and (allowed is None or symbol in allowed))


service = Service("order-validator", "1.0.0", "Validates FlatBuffers orders; publishes the "
                  "accepted ones and projects net positions per symbol")
service.stream(EVENTS_STREAM, [EVENTS_SUBJECT])


@service.endpoint("orders.in", name="validate", queue_group="order-validator")
def validate(data: memoryview) -> bytes:
    try:
        _, symbol, price, quantity, side, _ = read_order(data)
    except NotAnOrder as exc:
        raise ServiceError(400, f"not a finance.Order: {exc}") from None
    if not is_valid(symbol, price, quantity, side):
        return REJECTED
    service.publish_event(EVENTS_SUBJECT, data.tobytes())
    return ACCEPTED


# -- the read side: positions projected from the accepted orders -----------------------
_state: StateService | None = None


def projecting() -> bool:
    """``ORDERS_PROJECTION=off``: this worker validates only (no projection, and it
    leaves ``orders.positions`` to the workers that project)."""
    return os.environ.get("ORDERS_PROJECTION", "on").lower() not in ("off", "0", "false", "no")


@service.endpoint("orders.positions", name="positions", queue_group="order-validator",
                  when=projecting)
def positions(data: memoryview) -> bytes:
    symbol = data.tobytes()
    if _state is None:
        raise ServiceError(503, "the projection is not running")
    if _SYMBOL.fullmatch(symbol) is None:
        raise ServiceError(400, "a symbol is 1-12 characters of A-Z, 0-9, . and -")
    name = symbol.decode()
    return orjson.dumps({"symbol": name, "position": _state.ledger.get(POSITIONS, name)})


def project(state: StateService, seq: int, event: bytes) -> None:
    """One accepted order into the positions, once (by its stream sequence)."""
    project_many(state, [(seq, event)])


def project_many(state: StateService, events: list[tuple[int, bytes]]) -> int:
    """Accepted orders into the positions in one transaction, each once."""
    batch: list[tuple[int, dict[str, float]]] = []
    for seq, event in events:
        try:
            _, symbol, _, quantity, side, _ = read_order(memoryview(event))
        except NotAnOrder:
            batch.append((seq, {}))
            continue
        batch.append((seq, {symbol.decode(): float(quantity if side == 0 else -quantity)}))
    return state.ledger.apply_many(POSITIONS, batch)


@service.started
async def start_projection(worker: Worker) -> None:
    """Follow ``ORDERS`` from the ledger's cursor. Events are applied in batches on a
    thread (one SQLite transaction each), off the loop that answers requests.
    ``ORDERS_PROJECTION=off`` leaves it (and ``orders.positions``) to other workers:
    validators that only write, beside one that projects."""
    global _state
    from nats.js import api

    if not projecting():
        return
    _state = StateService.open(StateSettings(), Path(worker.data_dir))
    state = _state
    start = state.ledger.cursor(POSITIONS) + 1
    pending: list[tuple[int, bytes]] = []
    wake = asyncio.Event()
    stop = asyncio.Event()

    async def on_event(msg: Any) -> None:
        pending.append((msg.metadata.sequence.stream, msg.data))
        wake.set()

    async def apply_batches() -> None:
        """Until stopped and nothing is left: one batch at a time, in stream order (a
        batch never overtakes another, so the cursor never skips one)."""
        while not (stop.is_set() and not pending):
            if not pending:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), 0.5)
                continue
            await asyncio.sleep(0.02)  # gather what comes meanwhile
            batch = pending[:]
            try:
                await asyncio.to_thread(project_many, state, batch)
            except Exception:  # e.g. the disk: keep the events, try again shortly
                log.exception("positions projection failed; retrying")
                await asyncio.sleep(1.0)
                continue
            del pending[:len(batch)]

    sub = await worker.js.subscribe(
        EVENTS_SUBJECT, cb=on_event, ordered_consumer=True,
        config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                                  opt_start_seq=start))
    task = asyncio.get_running_loop().create_task(apply_batches())
    worker.resources += [sub, task, stop]


@service.stopping
async def stop_projection(worker: Worker) -> None:
    """Stop following, apply what was received, then close the store."""
    global _state
    for res in worker.resources:
        if hasattr(res, "unsubscribe"):
            with contextlib.suppress(Exception):
                await res.unsubscribe()
    for res in worker.resources:
        if isinstance(res, asyncio.Event):
            res.set()
    for res in worker.resources:
        if isinstance(res, asyncio.Task):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(res, 5)
    if _state is not None:
        _state.close()
        _state = None
