"""The mq framework on a real nats-server: the NATS services protocol, queue-group
sharing, the dedup window, back-pressure, drain on SIGTERM, and the circuit
breaker's transitions."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nats
import nats.errors
import numpy as np
import orjson
import pytest
from nats.micro.service import EndpointStats, ServiceInfo, ServicePing, ServiceStats
from prometheus_client import CollectorRegistry

from peregrine.mq.service import CircuitBreaker, CircuitOpenError, MqSettings, Worker
from peregrine.runtime.nats import EmbeddedNats

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slow_service
from examples import orders


def _order() -> bytes:
    from peregrine.loadgen.mq import build_order

    return build_order(1, "AAPL", 10.0, 5, 0, 0)


def test_services_protocol_and_queue_group(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    async def main() -> None:
        registry = CollectorRegistry()
        one = Worker(orders.service, MqSettings(nats=nats_server.url), registry,
                     str(tmp_path / "one"))
        await one.start()
        two = Worker(orders.service, MqSettings(nats=nats_server.url), None,
                     str(tmp_path / "two"))
        await two.start()
        nc = await nats.connect(nats_server.url)
        try:
            for _ in range(200):
                assert (await nc.request("orders.in", _order(), timeout=5)).data == b"\x01"
            # $SRV.PING / INFO / STATS: every instance answers; nats.micro parses them.
            inbox = nc.new_inbox()
            answers: list[dict[str, object]] = []
            async def collect(msg: object) -> None:
                answers.append(orjson.loads(msg.data))  # type: ignore[attr-defined]

            sub = await nc.subscribe(inbox, cb=collect)
            for verb in ("PING", "INFO", "STATS"):
                await nc.publish(f"$SRV.{verb}.order-validator", b"", reply=inbox)
            await nc.flush()
            for _ in range(100):
                if len(answers) == 6:
                    break
                await asyncio.sleep(0.02)
            await sub.unsubscribe()
            kinds = sorted(str(a["type"]) for a in answers)
            assert kinds == ["io.nats.micro.v1.info_response"] * 2 + \
                ["io.nats.micro.v1.ping_response"] * 2 + ["io.nats.micro.v1.stats_response"] * 2
            for a in answers:
                if a["type"].endswith("ping_response"):  # type: ignore[union-attr]
                    assert ServicePing.from_dict(a).name == "order-validator"
                elif a["type"].endswith("info_response"):  # type: ignore[union-attr]
                    info = ServiceInfo.from_dict(a)
                    assert {e.subject for e in info.endpoints} == {"orders.in",
                                                                  "orders.positions"}
                    assert {e.queue_group for e in info.endpoints} == {"order-validator"}
            stats = [ServiceStats.from_dict(a) for a in answers
                     if str(a["type"]).endswith("stats_response")]
            served = [next(e for e in s.endpoints if e.name == "validate") for s in stats]
            assert all(isinstance(e, EndpointStats) for e in served)
            counts = sorted(e.num_requests for e in served)
            assert sum(counts) == 200 and counts[0] > 20  # the group shared the load
            assert served[0].data["latency"]["p50_us"] >= 1
            # One instance by id.
            r = await nc.request(f"$SRV.PING.order-validator.{one.id}", b"", timeout=2)
            assert orjson.loads(r.data)["id"] == one.id
            # HDR latency reaches Prometheus as a summary.
            names = {m.name for m in registry.collect()}
            assert "peregrine_mq_handler_seconds" in names
            handled = registry.get_sample_value("peregrine_mq_requests_total",
                                                {"service": "order-validator",
                                                 "endpoint": "validate"})
            assert handled == next(e.num_requests for s in stats for e in s.endpoints
                                   if e.name == "validate" and s.id == one.id)
        finally:
            await nc.close()
            await one.drain()
            await two.drain()

    asyncio.run(main())


def test_dedup_errors_and_back_pressure(nats_server: EmbeddedNats) -> None:
    async def main() -> None:
        settings = MqSettings(nats=nats_server.url, max_inflight=2, pending_msgs=5)
        registry = CollectorRegistry()
        worker = Worker(slow_service.service, settings, registry)
        await worker.start()
        nc = await nats.connect(nats_server.url)
        try:
            # A repeated request id is answered from the window: the handler ran once.
            first = await nc.request("count.once", b"x", headers={"Request-Id": "r-1"})
            again = await nc.request("count.once", b"x", headers={"Request-Id": "r-1"})
            assert first.data == again.data and slow_service.calls["n"] == 1
            other = await nc.request("count.once", b"x", headers={"Request-Id": "r-2"})
            assert other.data == b"2"
            failed = await nc.request("count.once", b"fail")
            assert failed.headers is not None
            assert failed.headers["Nats-Service-Error-Code"] == "409"
            assert failed.headers["Nats-Service-Error"] == "asked to fail"
            # Saturated: two handlers held, five waiting; the rest is dropped and counted.
            for _ in range(60):
                await nc.publish("held", b"x")
            await nc.flush()
            await asyncio.sleep(0.5)
            assert worker.overflow > 0
            assert len(worker._tasks) == 2  # never more than max_inflight
            slow_service.gate.set()
            r = await nc.request("count.once", b"y", timeout=5)  # still serving
            assert r.data
        finally:
            await nc.close()
            await worker.drain()

    asyncio.run(main())


def test_sigterm_drains_requests_in_flight(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "peregrine", "mq", "slow_service:service",
                             "--nats", nats_server.url, "--data", str(tmp_path)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    async def main() -> list[bytes]:
        nc = await nats.connect(nats_server.url)
        for _ in range(100):  # up: it answers the services protocol
            try:
                await nc.request("$SRV.PING.slow-echo", b"", timeout=0.2)
                break
            except Exception:
                await asyncio.sleep(0.1)
        calls = [asyncio.create_task(nc.request("slow.echo", f"m{i}".encode(), timeout=10))
                 for i in range(20)]
        await asyncio.sleep(0.2)  # all twenty in flight (each takes 0.5 s)
        proc.send_signal(signal.SIGTERM)
        replies = await asyncio.gather(*calls)
        await nc.close()
        return [r.data for r in replies]

    replies = asyncio.run(main())
    assert replies == [f"m{i}".encode() for i in range(20)]
    assert proc.wait(15) == 0


def test_latency_histogram_folds_in_bulk_without_losing_a_value() -> None:
    from hdrh.histogram import HdrHistogram

    from peregrine.mq.hdr import LatencyHistogram

    values = [int(v) for v in np.random.default_rng(3).lognormal(2.0, 1.0, 10_001)] + [0]
    ours, plain = LatencyHistogram(), HdrHistogram(1, 60_000_000, 3)
    for v in values:
        ours.record(v)
        plain.record_value(max(1, v))
    assert ours.count == len(values)  # the unfolded tail counts too
    for q in (50.0, 90.0, 99.0, 99.9, 100.0):
        assert ours.percentile(q) == plain.get_value_at_percentile(q)


def test_circuit_breaker_transitions() -> None:
    now = [0.0]
    registry = CollectorRegistry()
    breaker = CircuitBreaker("vector", failure_threshold=3, reset_s=5.0, registry=registry,
                             clock=lambda: now[0])

    def boom() -> None:
        raise ConnectionError("down")

    def gauge() -> float | None:
        return registry.get_sample_value("peregrine_mq_breaker_state", {"breaker": "vector"})

    assert breaker.call(lambda: 1) == 1 and breaker.state == "closed" and gauge() == 0
    for _ in range(3):
        with pytest.raises(ConnectionError):
            breaker.call(boom)
    assert breaker.state == "open" and gauge() == 2
    with pytest.raises(CircuitOpenError):  # fails fast: the downstream is not called
        breaker.call(lambda: 1)
    now[0] = 5.1
    with pytest.raises(ConnectionError):  # half-open: one trial, which fails
        breaker.call(boom)
    assert breaker.state == "open"
    now[0] = 10.3
    assert asyncio.run(breaker.acall(asyncio.sleep, 0, "ok")) == "ok"  # trial succeeds
    assert breaker.state == "closed" and gauge() == 0
    opened = registry.get_sample_value("peregrine_mq_breaker_transitions_total",
                                       {"breaker": "vector", "to": "open"})
    assert opened == 2
    assert time.monotonic() > 0


def test_events_only_after_success_and_only_acknowledged_by_a_stream(
        nats_server: EmbeddedNats) -> None:
    async def main() -> None:
        worker = Worker(slow_service.service, MqSettings(nats=nats_server.url, drain_s=1.0))
        await worker.start()
        nc = await nats.connect(nats_server.url)
        seen: list[bytes] = []

        async def watch(msg: object) -> None:
            seen.append(msg.data)  # type: ignore[attr-defined]

        await nc.subscribe("unstreamed.events", cb=watch)
        try:
            failing = asyncio.create_task(nc.request("event.then.fail", b"fail", timeout=5))
            ok = await nc.request("event.then.fail", b"good", timeout=5)
            bad = await failing
            assert ok.data == b"ok"
            assert bad.headers is not None and bad.headers["Nats-Service-Error-Code"] == "503"
            await asyncio.sleep(0.2)
            assert seen == [b"good"]  # the failed request's event was never published
            # No stream listens on that subject: the event is not acknowledged.
            assert worker.events is not None and len(worker.events.pending) == 1
            # A 5xx is not remembered: the same request id runs again.
            again = await nc.request("event.then.fail", b"fail",
                                     headers={"Request-Id": "same"}, timeout=5)
            once_more = await nc.request("event.then.fail", b"fail",
                                         headers={"Request-Id": "same"}, timeout=5)
            assert again.headers and once_more.headers
            assert worker.endpoint_stats["event_then_fail"].requests == 4
            # The window is per endpoint: another endpoint's same id is its own request.
            first = await nc.request("count.once", b"x", headers={"Request-Id": "same"})
            assert first.data.isdigit()
        finally:
            await nc.close()
            assert not await worker.drain()  # unacknowledged events: not a clean drain

    asyncio.run(main())


def test_a_flush_of_events_is_acknowledged_once_and_each_lands_once(
        nats_server: EmbeddedNats) -> None:
    async def main() -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await js.add_stream(name="FLUSHED", subjects=["streamed.events"])
        worker = Worker(slow_service.service, MqSettings(nats=nats_server.url, drain_s=5.0))
        await worker.start()
        assert worker.events is not None
        acks: list[bytes] = []

        async def count(msg: object) -> None:
            acks.append(msg.data)  # type: ignore[attr-defined]

        await nc.subscribe(worker.events.inbox + ".*", cb=count)
        try:
            n = 400
            replies = await asyncio.gather(*(nc.request("event.each", str(i).encode(),
                                                        timeout=10) for i in range(n)))
            assert all(r.data == b"ok" for r in replies)
            deadline = time.monotonic() + 10
            while worker.events.pending and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not worker.events.pending  # every event acknowledged
            info = await js.stream_info("FLUSHED")
            assert info.state.messages == n  # each exactly once
            sub = await js.pull_subscribe("streamed.events", "check", stream="FLUSHED")
            got = [m.data for m in await sub.fetch(n, timeout=5)]
            assert sorted(got) == sorted(str(i).encode() for i in range(n))
            assert 0 < len(acks) < n  # a flush, not an event, gets an acknowledgement
        finally:
            assert await worker.drain()
            await nc.close()

    asyncio.run(main())


def test_an_event_the_stream_refuses_is_never_settled_by_another_ones_ack(
        nats_server: EmbeddedNats) -> None:
    async def main() -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await js.add_stream(name="SMALL", subjects=["small.events"], max_msg_size=100)
        worker = Worker(slow_service.service, MqSettings(nats=nats_server.url, drain_s=1.0))
        await worker.start()
        events = worker.events
        assert events is not None
        try:
            # One flush: no stream, stored, too large for the stream, stored.
            events.send([("nowhere.events", b"a"), ("small.events", b"b"),
                         ("small.events", b"x" * 500), ("small.events", b"c")], None)
            await asyncio.sleep(1.0)
            info = await js.stream_info("SMALL")
            assert info.state.messages == 2
            left = sorted(e[1][:1] for e in events.pending.values())
            assert left == [b"a", b"x"]  # refused ones stay pending (and are resent)
        finally:
            assert not await worker.drain()
            await nc.close()

    asyncio.run(main())


def test_breaker_counts_cancelled_trials_and_ignores_late_news() -> None:
    now = [0.0]
    breaker = CircuitBreaker("d", failure_threshold=1, reset_s=1.0, clock=lambda: now[0])

    async def main() -> None:
        with pytest.raises(ConnectionError):
            await breaker.acall(_fail)
        assert breaker.state == "open"
        now[0] = 2.0
        trial = asyncio.create_task(breaker.acall(asyncio.sleep, 10))
        await asyncio.sleep(0)
        trial.cancel()  # the half-open trial is cancelled: it counts as a failure
        await asyncio.gather(trial, return_exceptions=True)
        assert breaker.state == "open"
        now[0] = 4.0
        assert await breaker.acall(asyncio.sleep, 0, 1) == 1  # a new trial is allowed
        assert breaker.state == "closed"

    asyncio.run(main())


async def _fail() -> None:
    raise ConnectionError("down")


class _SecuredNats(EmbeddedNats):
    """nats-server requiring credentials (a token, or a user and password)."""

    def __init__(self, store: Path, *auth: str) -> None:
        super().__init__(store)
        self.auth = list(auth)

    def command(self) -> list[str]:
        return [*super().command(), *self.auth]


@pytest.mark.parametrize(("server_args", "client"), [
    (("--auth", "s3cret-token"), {"token": "s3cret-token"}),
    (("--user", "svc", "--pass", "pw"), {"user": "svc", "password": "pw"}),
])
def test_credentials_reach_nats(tmp_path: Path, server_args: tuple[str, ...],
                                client: dict[str, str]) -> None:
    with _SecuredNats(tmp_path / "nats", *server_args) as server:
        async def main() -> None:
            refused = Worker(slow_service.service, MqSettings(nats=server.url))
            with pytest.raises((TimeoutError, nats.errors.Error)):  # no credentials: refused
                await asyncio.wait_for(refused.start(), 3)
            worker = Worker(slow_service.service, MqSettings(nats=server.url, **client))
            await worker.start()
            opts = {"token": client["token"]} if "token" in client else {
                "user": client["user"], "password": client["password"]}
            nc = await nats.connect(server.url, **opts)
            try:
                assert (await nc.request("count.once", b"x", timeout=5)).data.isdigit()
            finally:
                await nc.close()
                await worker.drain()

        asyncio.run(main())
