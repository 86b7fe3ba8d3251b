"""Worker edge cases found in review: a deleted consumer, a stage that raises."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from streamutil import FAST, connect, drained, publish

from peregrine.runtime.nats import EmbeddedNats
from peregrine.stream.consumer import PullConsumer
from peregrine.stream.pipeline import Pipeline
from peregrine.stream.worker import ConsumerGoneError, Worker


def _worker_stops_when_its_consumer_is_deleted(url: str, name: str, within_s: float,
                                               match: str | None = None) -> None:
    async def main() -> None:
        nc, js = await connect(url)
        worker = Worker(Pipeline(name, source=f"in.{name}").map(lambda d: d), FAST, url)
        task = asyncio.create_task(worker.run(asyncio.Event()))
        await asyncio.wait_for(worker.ready.wait(), 10)
        await js.delete_consumer(f"PG_{name.upper()}", name)
        with pytest.raises(ConsumerGoneError, match=match):
            await asyncio.wait_for(task, within_s)  # not a busy loop of refused pulls
        await nc.close()

    asyncio.run(main())


def test_a_deleted_consumer_stops_the_worker(nats_server: EmbeddedNats) -> None:
    _worker_stops_when_its_consumer_is_deleted(nats_server.url, "gone", 10)


def test_a_deleted_consumer_stops_the_worker_even_if_no_pull_is_refused(
        nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch) -> None:
    # Whether the server refuses a pull to a deleted consumer or leaves it unanswered
    # depends on timing; the lag check's consumer_info must catch the second case.
    monkeypatch.setattr(PullConsumer, "take_failure", lambda self: "")
    _worker_stops_when_its_consumer_is_deleted(nats_server.url, "quiet", 15, "consumer_info")


def test_an_unexpected_exception_in_a_stage_is_retried_not_fatal(
        nats_server: EmbeddedNats) -> None:
    calls: list[int] = []

    def subject(data: Any) -> str:  # stages catch only a few kinds from such functions
        calls.append(data["i"])
        if len(calls) == 1:
            raise AttributeError("a bug in the user's function")
        return f"out.flaky.{data['i']}"

    async def main() -> None:
        nc, js = await connect(nats_server.url)
        pipeline = Pipeline("flaky", source="in.flaky", retry_backoff_s=(0.05,)).emit(subject)
        worker = Worker(pipeline, FAST, nats_server.url)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.wait_for(worker.ready.wait(), 10)
        await publish(js, "in.flaky", [{"i": 1}])
        await drained(js, "PG_FLAKY", "flaky")
        stop.set()
        await asyncio.wait_for(task, 10)
        await nc.close()

    asyncio.run(main())
    assert calls == [1, 1]  # failed once, redelivered, then done
