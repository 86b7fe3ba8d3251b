"""Services for the framework's tests: slow, blocking and counting handlers."""

from __future__ import annotations

import asyncio

from peregrine.mq.service import Service, ServiceError

service = Service("slow-echo", "0.1.0", "Answers after a pause (drain tests)")
calls = {"n": 0}
gate = asyncio.Event()


@service.endpoint("slow.echo", name="echo")
async def echo(data: memoryview) -> bytes:
    await asyncio.sleep(0.5)
    return data.tobytes()


@service.endpoint("count.once", name="count")
def count(data: memoryview) -> bytes:
    calls["n"] += 1
    if data.tobytes() == b"fail":
        raise ServiceError(409, "asked to fail")
    return str(calls["n"]).encode()


@service.endpoint("held", name="held")
async def held(data: memoryview) -> bytes:
    await gate.wait()
    return b"ok"


@service.endpoint("event.then.fail", name="event_then_fail")
async def event_then_fail(data: memoryview) -> bytes:
    service.publish_event("unstreamed.events", data.tobytes())
    await asyncio.sleep(0.1)
    if data.tobytes() == b"fail":
        raise ServiceError(503, "downstream unavailable")
    return b"ok"


@service.endpoint("event.each", name="event_each")
def event_each(data: memoryview) -> bytes:
    service.publish_event("streamed.events", data.tobytes())
    return b"ok"
