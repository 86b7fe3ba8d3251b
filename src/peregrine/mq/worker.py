"""Running a ``Service`` on NATS: subscriptions, replies, events, drain.

One ``Worker`` per process serves every endpoint of one service in its queue
group. A message reaches its handler as a ``memoryview`` of the bytes nats-py
received (no copy). A sync handler runs inline in the subscription's callback,
the fastest path. An async handler runs as a task, at most ``max_inflight`` at
once per endpoint; past that the callback waits, the subscription's bounded
buffer fills, and NATS drops what does not fit (counted as overflow) instead of
the worker's memory growing.

The reply is published first. Events the handler queued (``Service.publish_event``)
go after it, to JetStream, a flush per event-loop turn with one acknowledgement
per subject where the stream allows (``EventPublisher``): they never delay the
reply, and one not acknowledged within two seconds is sent again under the same
``Nats-Msg-Id`` (JetStream drops the duplicate).

SIGTERM drains: the subscriptions stop taking messages and hand over what they
hold, the requests in flight are answered, the events are acknowledged, and the
worker exits 0, all within ``drain_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import uuid
from collections import OrderedDict
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from peregrine.mq.declare import (
    Endpoint,
    EndpointStats,
    Service,
    ServiceError,
    current_worker,
    request_events,
)
from peregrine.mq.hdr import HdrCollector
from peregrine.mq.micro import ServicesProtocol
from peregrine.mq.settings import MqSettings

log = logging.getLogger("peregrine.mq")

REQUEST_ID = "Request-Id"
_EVENT_RETRY_S = 2.0
_RESEND_BATCH = 1000  # events sent again per round (twice a second)
_POLICY_TTL_S = 60.0  # how long a subject's stream settings are trusted


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["service", "endpoint"]
        self.errors = Counter("peregrine_mq_errors", "Requests answered with a service "
                              "error", [*labels, "code"], registry=registry)
        self.overflow = Counter("peregrine_mq_overflow", "Messages dropped because a "
                                "subscription's buffer was full (back-pressure)", ["service"],
                                registry=registry)
        self.duplicates = Counter("peregrine_mq_duplicates", "Repeated requests answered "
                                  "from the dedup window", labels, registry=registry)
        self.events = Counter("peregrine_mq_events", "Events published, by outcome",
                              ["service", "outcome"], registry=registry)


class EventPublisher:
    """Events to JetStream, acknowledged a subject at a time per flush.

    ``send`` queues a request's events; once per event-loop turn one flush
    publishes everything queued, in order on the one connection. Within a flush,
    only the last event of each subject asks for JetStream's acknowledgement, and
    that acknowledgement (a JSON answer with its ``seq``) settles the flush's
    events of that subject: one subject belongs to one stream, which stores one
    connection's publications in order. That saves a reply message per event,
    most of what events cost the worker. Sharing is only allowed where the stream
    cannot refuse one message and keep a later one: an event of a subject with no
    stream, of a stream that discards new messages at its limits, or larger than
    the stream's ``max_msg_size``, asks for its own acknowledgement (the stream's
    settings are looked up once a minute per subject). A failed publication
    leaves its whole flush to be settled event by event.

    An error, or the empty 503 that no stream on the subject produces, leaves
    events pending. An event pending for two seconds is sent again on its own,
    with its own acknowledgement, at most ``_RESEND_BATCH`` per round, under the
    same ``Nats-Msg-Id`` (JetStream drops the duplicate). At most ``max_pending``
    wait: past that ``has_room`` is False and requests that would add events are
    refused rather than held in memory.
    """

    def __init__(self, nc: Any, js: Any, metrics: _Metrics | None, service: str,
                 max_pending: int = 100_000) -> None:
        self.nc, self.js, self.metrics, self.service = nc, js, metrics, service
        self.max_pending = max_pending
        self.inbox = f"_INBOX.pgev.{uuid.uuid4().hex}"
        self.pending: dict[int, tuple[str, bytes, str, float]] = {}
        self._seq = 0
        self._prefix = uuid.uuid4().hex[:12]
        self._sub: Any = None
        self._retry: asyncio.Task[None] | None = None
        self._inbox_len = len(self.inbox) + 1
        self._acked = metrics.events.labels(service, "acked") if metrics is not None else None
        self._queued: list[int] = []  # sequences for the next flush
        self._flushing: asyncio.Task[None] | None = None
        # The last sequence of a subject in a flush -> the flush's events of it.
        self._flushes: dict[int, list[int]] = {}
        # subject -> (when looked up, may share an acknowledgement, max_msg_size or 0)
        self._policies: dict[str, tuple[float, bool, int]] = {}

    @property
    def has_room(self) -> bool:
        return len(self.pending) < self.max_pending

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self.inbox + ".*", cb=self._ack)
        self._retry = asyncio.get_running_loop().create_task(self._resend())

    def send(self, events: list[tuple[str, bytes]], request_id: str | None) -> None:
        """Queue a request's events (after its reply). With a request id, their
        message ids derive from it, so a retried request (on any worker) publishes
        no duplicate."""
        now = time.monotonic()
        for i, (subject, data) in enumerate(events):
            self._seq += 1
            msg_id = f"{request_id}:{i}" if request_id else f"{self._prefix}-{self._seq}"
            self.pending[self._seq] = (subject, data, msg_id, now)
            self._queued.append(self._seq)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _policy(self, subject: str) -> tuple[bool, int]:
        """Whether the subject's events may share an acknowledgement, and the size
        above which one may not (0: no limit)."""
        now = time.monotonic()
        known = self._policies.get(subject)
        if known is not None and now - known[0] < _POLICY_TTL_S:
            return known[1], known[2]
        shared, limit = False, 0
        with contextlib.suppress(Exception):  # no stream, or JetStream away: alone
            config = (await self.js.stream_info(
                await self.js.find_stream_name_by_subject(subject))).config
            discards_new = str(getattr(config.discard, "value", config.discard)) == "new"
            shared = not discards_new and not getattr(config, "discard_new_per_subject",
                                                      False)
            limit = max(0, int(config.max_msg_size or 0))
        self._policies[subject] = (now, shared, limit)
        return shared, limit

    async def _flush(self) -> None:
        try:
            while self._queued:
                seqs, self._queued = self._queued, []
                by_subject: dict[str, list[int]] = {}
                for seq in seqs:
                    if (event := self.pending.get(seq)) is not None:
                        by_subject.setdefault(event[0], []).append(seq)
                asks: set[int] = set()  # the events that ask for an acknowledgement
                made: list[int] = []
                for subject, group in by_subject.items():
                    shared_ok, limit = await self._policy(subject)
                    if not shared_ok:
                        asks.update(group)
                        continue
                    shared = group if not limit else [
                        s for s in group if len(self.pending[s][1]) <= limit]
                    if len(shared) < len(group):
                        asks.update(set(group).difference(shared))
                    if shared:
                        self._flushes[shared[-1]] = shared
                        made.append(shared[-1])
                        asks.add(shared[-1])
                for seq in seqs:
                    event = self.pending.get(seq)
                    if event is None:
                        continue
                    subject, data, msg_id, _ = event
                    try:
                        await self.nc.publish(
                            subject, data, headers={"Nats-Msg-Id": msg_id},
                            reply=f"{self.inbox}.{seq}" if seq in asks else "")
                    except Exception:  # not sent: no shared acknowledgement may settle
                        for last in made:  # it; every event is resent alone later
                            self._flushes.pop(last, None)
        finally:
            self._flushing = None

    async def _publish(self, seq: int, subject: str, data: bytes, msg_id: str) -> None:
        await self.nc.publish(subject, data, reply=f"{self.inbox}.{seq}",
                              headers={"Nats-Msg-Id": msg_id})

    async def _ack(self, msg: Any) -> None:
        data = msg.data
        # An acknowledgement names the stream sequence; anything else (an error, the
        # empty no-responders status when no stream listens) leaves the events pending.
        if not data or b'"seq"' not in data or b'"error"' in data:
            return
        try:
            seq = int(msg.subject[self._inbox_len:])
        except ValueError:
            return
        settled = 0
        for s in self._flushes.pop(seq, None) or (seq,):
            settled += self.pending.pop(s, None) is not None
        if settled and self._acked is not None:
            self._acked.inc(settled)

    async def _resend(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            due = [(seq, e) for seq, e in list(self.pending.items())[:_RESEND_BATCH * 4]
                   if now - e[3] > _EVENT_RETRY_S][:_RESEND_BATCH]
            for seq, (subject, data, msg_id, _) in due:
                self._flushes.pop(seq, None)  # its acknowledgement now settles it alone
                self.pending[seq] = (subject, data, msg_id, now)
                with contextlib.suppress(Exception):
                    await self._publish(seq, subject, data, msg_id)
                if self.metrics is not None:
                    self.metrics.events.labels(self.service, "resent").inc()

    async def drain(self, deadline: float) -> bool:
        """Send what is queued, then wait for every acknowledgement (or the
        deadline)."""
        if self._flushing is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._flushing),
                                       max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(Exception):
            await self.nc.flush(timeout=max(0.1, deadline - time.monotonic()))
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self._retry is not None:
            self._retry.cancel()
        return not self.pending


class Worker:
    def __init__(self, service: Service, settings: MqSettings,
                 registry: CollectorRegistry | None = None, data_dir: str = "./data") -> None:
        self.service, self.settings = service, settings
        #: Where the service may keep local state (``--data``).
        self.data_dir = data_dir
        #: Things hooks opened (subscriptions...), for their stop hooks.
        self.resources: list[Any] = []
        self.registry = registry
        self.metrics = _Metrics(registry) if registry is not None else None
        self.endpoint_stats = {e.name: EndpointStats(e) for e in service.endpoints}
        if registry is not None:
            stats = self.endpoint_stats
            registry.register(HdrCollector({n: st.latency for n, st in stats.items()},
                                           service.name,
                                           lambda: {n: st.requests for n, st in stats.items()}))
            for breaker in service.breakers.values():
                breaker.attach(registry)
        self.id = uuid.uuid4().hex
        self.nc: Any = None
        self.js: Any = None
        self.events: EventPublisher | None = None
        self._subs: list[Any] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._dedup: OrderedDict[str, tuple[float, bytes, dict[str, str] | None]] = \
            OrderedDict()
        self.started = time.time()
        self.overflow = 0
        self._micro: ServicesProtocol | None = None

    # -- connection ------------------------------------------------------------------
    def connect_options(self) -> dict[str, Any]:
        s = self.settings
        options: dict[str, Any] = {
            "servers": [u.strip() for u in s.nats.split(",") if u.strip()],
            "name": f"{self.service.name}-{self.id[:8]}", "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5, "error_cb": self._nats_error,
            "pending_size": 4 * 1024 * 1024}
        if s.tls_ca or s.tls_cert:
            ctx = ssl.create_default_context(cafile=s.tls_ca or None)
            if s.tls_cert:
                ctx.load_cert_chain(s.tls_cert, s.tls_key)
            options["tls"] = ctx
        if s.creds:
            options["user_credentials"] = s.creds
        if s.nkey_seed:
            options["nkeys_seed"] = s.nkey_seed
        if s.token:
            options["token"] = s.token
        if s.user:
            options["user"], options["password"] = s.user, s.password
        return options

    async def _nats_error(self, exc: Exception) -> None:
        import nats.errors

        if isinstance(exc, nats.errors.SlowConsumerError):
            self.overflow += 1
            if self.metrics is not None:
                self.metrics.overflow.labels(self.service.name).inc()
            return
        log.warning("nats: %s", exc)

    async def start(self) -> None:
        import nats

        s = self.settings
        self.nc = await nats.connect(**self.connect_options())
        self.js = self.nc.jetstream()
        for stream, subjects in self.service.streams.items():
            await _ensure_stream(self.js, stream, subjects)
        self.events = EventPublisher(self.nc, self.js, self.metrics, self.service.name)
        await self.events.start()
        self.service.bind(self)
        for ep in self.service.endpoints:
            if ep.when is not None and not ep.when():
                continue  # left to other workers
            self._limits[ep.name] = asyncio.Semaphore(s.max_inflight)
            sub = await self.nc.subscribe(
                ep.subject, queue=ep.queue_group, cb=self._callback(ep),
                pending_msgs_limit=s.pending_msgs, pending_bytes_limit=s.pending_mb << 20)
            self._subs.append(sub)
        self._micro = ServicesProtocol(self)
        await self._micro.start()
        for hook in self.service.on_start:
            await hook(self)
        await self.nc.flush()

    # -- messages -----------------------------------------------------------------------
    def _callback(self, ep: Endpoint) -> Any:
        if ep.is_async:
            limit = self._limits[ep.name]

            def finished(task: asyncio.Task[None]) -> None:
                self._tasks.discard(task)
                limit.release()

            async def spawn(msg: Any) -> None:
                await limit.acquire()  # saturated: stop taking messages
                task = asyncio.get_running_loop().create_task(self._handle(ep, msg))
                self._tasks.add(task)
                task.add_done_callback(finished)

            return spawn

        async def inline(msg: Any) -> None:
            await self._handle(ep, msg)

        return inline

    async def _handle(self, ep: Endpoint, msg: Any) -> None:
        current_worker.set(self)
        events: list[tuple[str, bytes]] = []
        request_events.set(events)
        reply = msg.reply
        headers = msg.headers
        rid = headers.get(REQUEST_ID) if headers and self.settings.dedup_entries else None
        key = f"{ep.name}\x00{rid}" if rid is not None else None
        if key is not None and (hit := self._remembered(key)) is not None:
            if reply:
                await self.nc.publish(reply, hit[0], headers=hit[1])
            if self.metrics is not None:
                self.metrics.duplicates.labels(self.service.name, ep.name).inc()
            return
        started = time.perf_counter_ns()
        err_headers = None
        try:
            out: Any = ep.handler(memoryview(msg.data))
            if ep.is_async:
                out = await out
            if not isinstance(out, (bytes, bytearray, memoryview)):
                raise TypeError(f"handler {ep.name} returned {type(out).__name__}, not bytes")
        except ServiceError as exc:
            out, err_headers = b"", {"Nats-Service-Error": exc.message,
                                     "Nats-Service-Error-Code": str(exc.code)}
        except Exception as exc:  # a handler bug answers 500; the worker goes on
            log.exception("handler %s failed", ep.name)
            out, err_headers = b"", {"Nats-Service-Error": f"internal error: {exc}"[:200],
                                     "Nats-Service-Error-Code": "500"}
        elapsed = time.perf_counter_ns() - started
        if reply:
            await self.nc.publish(reply, bytes(out), headers=err_headers)
        self.endpoint_stats[ep.name].record(elapsed, err_headers)
        if self.metrics is not None and err_headers is not None:
            self.metrics.errors.labels(self.service.name, ep.name,
                                       err_headers["Nats-Service-Error-Code"]).inc()
        # Remembered for a repeat, unless it failed on the server's side (a retry may
        # succeed); events only for a request that succeeded, after its reply.
        if key is not None and (err_headers is None or
                                not err_headers["Nats-Service-Error-Code"].startswith("5")):
            self._remember(key, bytes(out), err_headers)
        if events and err_headers is None and self.events is not None:
            self.events.send(events, rid)

    def _remembered(self, rid: str) -> tuple[bytes, dict[str, str] | None] | None:
        found = self._dedup.get(rid)
        if found is None:
            return None
        if time.monotonic() - found[0] > self.settings.dedup_ttl_s:
            self._dedup.pop(rid, None)
            return None
        return found[1], found[2]

    def _remember(self, rid: str, out: bytes, headers: dict[str, str] | None) -> None:
        self._dedup[rid] = (time.monotonic(), out, headers)
        while len(self._dedup) > self.settings.dedup_entries:
            self._dedup.popitem(last=False)

    def publish_event(self, subject: str, data: bytes) -> None:
        """Queue an event of the request being handled (sent after its reply)."""
        if self.events is None:
            raise RuntimeError("the worker is not started")
        if not self.events.has_room:  # the stream is not acknowledging: take no more
            raise ServiceError(503, "event backlog full: the stream is not acknowledging")
        request_events.get().append((subject, data))

    # -- shutdown -------------------------------------------------------------------------
    async def drain(self) -> bool:
        """Stop taking requests, answer those in flight, get the events acknowledged,
        close; True when all of it fitted in ``drain_s``."""
        deadline = time.monotonic() + self.settings.drain_s

        async def drain_one(sub: Any) -> None:
            with contextlib.suppress(Exception):
                await sub.drain()

        # Pending messages are still handed to the callbacks, all subscriptions at once,
        # within the deadline.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(drain_one(s) for s in self._subs)),
                                   max(0.01, deadline - time.monotonic()))
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self._tasks), timeout=max(0.01, deadline -
                                                             time.monotonic()))
        for hook in self.service.on_stop:
            with contextlib.suppress(Exception):
                await hook(self)
        clean = not self._tasks
        if self.events is not None:
            clean = await self.events.drain(deadline) and clean
        if self._micro is not None:
            await self._micro.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.drain(), max(0.1, deadline - time.monotonic()))
        return clean


async def _ensure_stream(js: Any, name: str, subjects: list[str]) -> None:
    from nats.js import api

    try:
        await js.stream_info(name)
    except Exception:
        with contextlib.suppress(Exception):  # another worker made it meanwhile
            await js.add_stream(api.StreamConfig(name=name, subjects=subjects,
                                                 storage=api.StorageType.FILE))
