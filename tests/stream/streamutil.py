"""Helpers for stream tests: run a worker in the test's event loop, publish, wait."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import orjson

from peregrine.stream.pipeline import Pipeline
from peregrine.stream.settings import StreamSettings
from peregrine.stream.sinks import VectorSink
from peregrine.stream.worker import Worker

FAST = StreamSettings(batch_ms=2.0, ack_wait_s=5.0)


@contextlib.asynccontextmanager
async def running(pipeline: Pipeline, url: str, sink: VectorSink | None = None,
                  settings: StreamSettings = FAST,
                  embedder_factory: Callable[[], Any] | None = None) -> AsyncIterator[Worker]:
    kwargs: dict[str, Any] = {"sink": sink}
    if embedder_factory is not None:
        kwargs["embedder_factory"] = embedder_factory
    worker = Worker(pipeline, settings, url, **kwargs)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    ready = asyncio.create_task(worker.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def publish(js: Any, subject: str, items: list[Any], key: str | None = None,
                  raw: bool = False, headers: dict[str, str] | None = None) -> list[int]:
    seqs = []
    for item in items:
        data = item if raw else orjson.dumps(item, option=orjson.OPT_SERIALIZE_NUMPY)
        ack = await js.publish(subject, data, headers=headers)
        seqs.append(ack.seq)
    return seqs


async def drained(js: Any, stream: str, consumer: str, timeout: float = 20.0) -> None:
    """Wait until the consumer has nothing pending or unacknowledged."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = await js.consumer_info(stream, consumer)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"consumer {consumer} not drained: {info}")


async def connect(url: str) -> tuple[Any, Any]:
    nc = await nats.connect(url)
    return nc, nc.jetstream()


async def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll an (async or plain) check until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"not reached within {timeout} s (last: {last!r})")
