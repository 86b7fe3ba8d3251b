"""Running one pipeline: pull micro-batches from its durable consumer, run the
stages, then acknowledge, retry or dead-letter each event.

Any number of workers may run the same pipeline: they share its one durable
JetStream consumer, so each event goes to one worker at a time, and the events
of a worker that dies are redelivered to the others after ``ack_wait``.

Guarantees, and where they come from:
- At-least-once delivery: an event is acknowledged only after its last stage
  (or after its dead letter is stored). Redeliveries are made harmless by the
  upsert stage's versioned writes (``stages.UpsertRunner``) and by the
  ``Nats-Msg-Id`` of emitted results.
- Per-key order: the stages form a pipeline (one task per stage, one batch in
  each), and every stage takes the batches in stream order; within a batch an
  event whose earlier same-key event failed is held back too (retried after it).
  Across workers and retries, versions make the stored state follow publish
  order: an older event never overwrites a newer one.
- Back-pressure: at most ``max_ack_pending`` events are out per consumer; a
  worker requests at most two batches' worth ahead and holds at most two batches
  per stage; a slow store slows the pulling, it does not grow memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import nats
from nats.js.errors import NotFoundError

from peregrine.core.errors import InvalidInputError
from peregrine.stream import event as hdr
from peregrine.stream.consumer import PullConsumer
from peregrine.stream.event import Event
from peregrine.stream.jetstream import dead_letter_subject, ensure_pipeline, max_deliver
from peregrine.stream.metrics import StreamMetrics
from peregrine.stream.pipeline import Pipeline, Upsert, read_field
from peregrine.stream.settings import StreamSettings
from peregrine.stream.sinks import HttpVectorSink, VectorSink
from peregrine.stream.stages import EmbedRunner, StageRunner, build

log = logging.getLogger("peregrine.stream")

_FETCH_WAIT_S = 1.0  # a long poll: returns as soon as one event is there
_LAG_EVERY_S = 5.0
_BACKFILL_CHECK_S = 0.25


def default_embedder(settings: StreamSettings) -> Any:
    """The embedder of embed stages that name none: the built-in model, or the
    remote one ``[stream] embed_url`` names, behind the SHA-256 text cache."""
    from peregrine.embed import MODEL_NAME, CachedEmbedder, RemoteEmbedder, TextEmbedder

    encoder: Any
    if settings.embed_url:
        encoder = RemoteEmbedder(settings.embed_url, settings.embed_model)
        model_id = f"{settings.embed_url}#{settings.embed_model}"
    else:
        encoder = TextEmbedder(num_threads=settings.embed_threads or None)
        model_id = f"{MODEL_NAME}#{encoder.backend}"
    if not settings.embed_cache:
        return encoder
    return CachedEmbedder(encoder, model_id, capacity=settings.embed_cache)


async def _hand_back(msgs: list[Any]) -> None:
    """Fetched but not run: redelivered at once (to another worker) rather than
    after ``ack_wait``."""
    for msg in msgs:
        with contextlib.suppress(Exception):
            await msg.nak()


class ConsumerGoneError(RuntimeError):
    """The pipeline's consumer is gone or refuses pulls (deleted by an operator)."""


def ack_metadata(msg: Any) -> tuple[int, int, float]:
    """(stream sequence, delivery count, publish time in epoch seconds) from a
    JetStream message's reply subject, ``$JS.ACK[.<domain>.<account>].<stream>.
    <consumer>.<delivered>.<stream seq>.<consumer seq>.<time ns>.<pending>[...]``;
    cheaper than nats-py's ``msg.metadata``, which builds datetimes per message."""
    tokens = msg.reply.split(".")
    at = 2 if len(tokens) == 9 else 4  # the old form, or with domain and account hash
    try:
        return int(tokens[at + 3]), int(tokens[at + 2]), int(tokens[at + 5]) / 1e9
    except (IndexError, ValueError):
        md = msg.metadata
        return md.sequence.stream, md.num_delivered, md.timestamp.timestamp()


def _header_value(text: str) -> str:
    return " ".join(text.split())[:1000]


class Worker:
    def __init__(self, pipeline: Pipeline, settings: StreamSettings, url: str, *,
                 sink: VectorSink | None = None, metrics: StreamMetrics | None = None,
                 embedder_factory: Callable[[], Any] | None = None,
                 on_settled: Callable[[list[Event]], None] | None = None,
                 freeze_gc: bool = False) -> None:
        self.pipeline, self.settings, self.url = pipeline, settings, url
        self.sink = sink
        if self.sink is None and settings.vector_url:
            self.sink = HttpVectorSink(settings.vector_url)
        self.metrics = metrics or StreamMetrics()
        self.embedder_factory = embedder_factory or (lambda: default_embedder(settings))
        self._embedder: Any = None
        self.on_settled = on_settled  # called with each batch once it is settled
        self.freeze_gc = freeze_gc  # a worker process: keep start-up objects out of GC
        # A new version catching up runs the stages up to its last upsert only, for
        # every event up to ``history_cutoff`` (all of them until it has caught up).
        self.backfilling = False
        self.history_cutoff: float = 0
        self.unpointed = False  # some alias does not name this version's collection yet
        # Set by the lag check when the server no longer knows the consumer: a pull
        # to a deleted consumer is not always refused, it may just go unanswered.
        self.consumer_gone = ""
        self.last_upsert = max((i for i, s in enumerate(pipeline.stages)
                                if isinstance(s, Upsert)), default=len(pipeline.stages))
        self.batch_size = pipeline.batch_size or settings.batch_size
        self.batch_ms = settings.batch_ms if pipeline.batch_ms is None else pipeline.batch_ms
        self.max_deliver = max_deliver(pipeline, settings)
        self.max_ack_pending = pipeline.max_ack_pending or settings.max_ack_pending
        self.nc: Any = None
        self.js: Any = None
        self.runners: list[StageRunner] = []
        self.ready = asyncio.Event()

    def embedder(self) -> Any:
        """One default embedder per worker, whatever the number of embed stages."""
        if self._embedder is None:
            self._embedder = self.embedder_factory()
        return self._embedder

    async def _nats_error(self, exc: Exception) -> None:
        """One line, at most every 10 s, while the bus is unreachable (nats-py's
        default prints a traceback per reconnect attempt)."""
        now = time.monotonic()
        if now - getattr(self, "_last_nats_error", -1e9) >= 10:
            self._last_nats_error = now
            log.warning("NATS %s: %s (retrying)", self.url, exc or type(exc).__name__)

    # -- lifecycle ----------------------------------------------------------------
    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        p = self.pipeline
        consumer: PullConsumer | None = None

        async def reconnected() -> None:
            if consumer is not None:
                consumer.on_reconnect()

        # The first connection retries until the bus answers, or until stopped.
        connecting = asyncio.create_task(nats.connect(
            self.url, name=f"peregrine-worker-{p.name}-{os.getpid()}",
            max_reconnect_attempts=-1, reconnect_time_wait=0.5, error_cb=self._nats_error,
            reconnected_cb=reconnected))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not connecting.done():
            connecting.cancel()
            with contextlib.suppress(BaseException):
                await connecting
            return
        self.nc = connecting.result()
        try:
            self.js = self.nc.jetstream()
            await ensure_pipeline(self.js, p, self.settings)
            assert p.stream is not None
            self.runners = [build(s, sink=self.sink, nc=self.nc, js=self.js, pipeline=p.name,
                                  collection_of=p.collection_of,
                                  default_embedder=self.embedder) for s in p.stages]
            await self._start_version()
            # Pulling starts last: nothing is fetched that a failed start-up would
            # leave waiting out ``ack_wait``.
            consumer = PullConsumer(self.nc, p.stream, p.consumer,
                                    window=min(2 * self.batch_size, self.max_ack_pending))
            await consumer.start()
            lag = asyncio.create_task(self._watch_lag(stop))
            waker = asyncio.create_task(self._wake_on(stop, consumer))
            if self.freeze_gc:  # what start-up built lives as long as the process
                gc.collect()
                gc.freeze()
            self.ready.set()
            log.info("worker started", extra={"fields": {"pipeline": p.name,
                                                         "stream": p.stream, "url": self.url}})
            try:
                await self._process(consumer, stop)
            finally:
                stop.set()
                waker.cancel()
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError,
                                         Exception):
                    await asyncio.wait_for(lag, _FETCH_WAIT_S * 3)
                await _hand_back(await consumer.stop())
        finally:
            if self.sink is not None:
                with contextlib.suppress(Exception):
                    await self.sink.close()
            # Every fetched event was settled or handed back above: close, not drain
            # (a pull subscription's drain waits out its pending requests).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.close(), 5)

    @staticmethod
    async def _wake_on(stop: asyncio.Event, consumer: PullConsumer) -> None:
        await stop.wait()
        consumer.arrived.set()

    async def _process(self, consumer: PullConsumer, stop: asyncio.Event) -> None:
        """The stages as a pipeline: one task per stage, one batch in each at a time,
        joined by one-slot queues. Batch N+1 is embedded while batch N is written
        and queried; every stage still sees the batches in stream order.

        A batch is cut only when the first stage can take it: at a low rate each
        event goes alone at once, under load the events that arrived meanwhile go
        together (up to ``batch_size``, after waiting up to ``batch_ms`` for more)."""
        links: list[asyncio.Queue[list[Event] | None]] = [
            asyncio.Queue(1) for _ in range(len(self.runners) + 1)]
        stages = [asyncio.create_task(self._stage_loop(i, links[i], links[i + 1]))
                  for i in range(len(self.runners))]
        settler = asyncio.create_task(self._settle_loop(links[-1]))
        workers = {*stages, settler}
        try:
            while not stop.is_set():
                for task in workers:
                    if task.done():
                        task.result()  # re-raise what stopped a stage
                try:
                    msgs = await consumer.next_batch(self.batch_size, self.batch_ms / 1000,
                                                     _FETCH_WAIT_S)
                except Exception as exc:  # disconnected: the client reconnects by itself
                    log.warning("pull failed: %s", exc)
                    await asyncio.sleep(0.5)
                    continue
                if failure := consumer.take_failure() or self.consumer_gone:
                    raise ConsumerGoneError(
                        f"pipeline {self.pipeline.name}: the server refused pulls ({failure});"
                        " was its consumer deleted?")
                if not msgs:
                    continue
                if stop.is_set():
                    await _hand_back(msgs)
                    break
                links[0].put_nowait(self._events(msgs))
                # The next batch is cut once the first stage has taken this one.
                taken = asyncio.create_task(links[0].join())
                await asyncio.wait({taken, *workers}, return_when=asyncio.FIRST_COMPLETED)
                if not taken.done():
                    taken.cancel()
                    for task in workers:
                        if task.done():
                            task.result()
            # Stopping: what is inside the stages finishes and is settled.
            await links[0].put(None)
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()

    def _events(self, msgs: list[Any]) -> list[Event]:
        p, m = self.pipeline, self.metrics
        events = [self.to_event(msg) for msg in msgs]
        m.batch_size.labels(p.name).observe(len(events))
        m.events.labels(p.name, "in").inc(len(events))
        redelivered = sum(e.deliveries > 1 for e in events)
        if redelivered:
            m.redeliveries.labels(p.name).inc(redelivered)
        return events

    async def _stage_loop(self, index: int, inbox: asyncio.Queue[list[Event] | None],
                          outbox: asyncio.Queue[list[Event] | None]) -> None:
        while (events := await inbox.get()) is not None:
            inbox.task_done()
            await self._run_stage(index, events)
            await outbox.put(events)
        await outbox.put(None)

    async def _settle_loop(self, inbox: asyncio.Queue[list[Event] | None]) -> None:
        while (events := await inbox.get()) is not None:
            await self._settle(events)
            if self.on_settled is not None:
                self.on_settled(events)

    async def _run_stage(self, index: int, events: list[Event]) -> None:
        p, m = self.pipeline, self.metrics
        runner = self.runners[index]
        if index > self.last_upsert and self.history_cutoff:
            self._skip_history(events)
        live = sum(e.live for e in events)
        if not live:
            return
        started = time.perf_counter()
        try:
            await runner.run(events)
        except Exception as exc:  # a stage's own bug or a user function's: retried
            log.exception("stage %s raised; its events will be retried", runner.name)
            for e in events:
                if e.live:
                    e.fail(runner.name, exc)
        m.stage_seconds.labels(p.name, runner.name).observe(time.perf_counter() - started)
        if isinstance(runner, EmbedRunner):
            m.embed_cache.labels(p.name, "hit").inc(runner.cache_hits)
            m.embed_cache.labels(p.name, "miss").inc(runner.cache_misses)
        failed = live - sum(e.live for e in events)
        m.stage_events.labels(p.name, runner.name, "ok").inc(live - failed)
        if failed:
            m.stage_events.labels(p.name, runner.name, "failed").inc(failed)
            self._hold_followers(events, runner.name)

    def _skip_history(self, events: list[Event]) -> None:
        """A new version re-processing the stream re-embeds history but does not act on
        it again: events up to the cutoff stop after the last upsert (acknowledged)."""
        for e in events:
            if e.seq <= self.history_cutoff and e.live:
                e.dropped = True

    async def _watch_lag(self, stop: asyncio.Event) -> None:
        p = self.pipeline
        while not stop.is_set():
            try:
                info = await self.js.consumer_info(p.stream, p.consumer)
                self.metrics.pending.labels(p.name).set(info.num_pending or 0)
                self.metrics.ack_pending.labels(p.name).set(info.num_ack_pending or 0)
                if self.backfilling and self.history_cutoff == math.inf \
                        and not info.num_pending:
                    # Caught up: what the stream holds now is history; what comes
                    # later is acted on. Switch once all of history is acknowledged.
                    self.history_cutoff = (await self.js.stream_info(p.stream)).state.last_seq
                if self.unpointed and (not self.backfilling or (
                        info.ack_floor is not None
                        and info.ack_floor.stream_seq >= self.history_cutoff)):
                    await self._point_aliases()
            except NotFoundError as exc:  # deleted: pulls may go unanswered, not refused
                self.consumer_gone = f"consumer_info: {exc}"
            except Exception as exc:  # the bus or the store is away: next round
                log.debug("lag check: %s", exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(),
                                       _BACKFILL_CHECK_S if self.unpointed else _LAG_EVERY_S)

    # -- versions: re-processing the stream into a new collection --------------------
    def _aliases(self) -> dict[str, str]:
        """alias -> this version's collection, for every upsert stage."""
        p = self.pipeline
        return {s.collection: p.collection_of(s.collection) for s in p.stages
                if isinstance(s, Upsert)}

    async def _start_version(self) -> None:
        """A versioned pipeline whose aliases already name its collections is live.
        One whose aliases name something else (another version's collections, or
        plain collections of that name) backfills: it runs the stream from its start
        through its last upsert only (re-emitting history would act on it twice),
        and points the aliases at its collections once it has caught up. On a first
        deployment (no alias, no collection) it is live, and points the aliases as
        soon as its collections exist."""
        if self.pipeline.version is None or self.sink is None:
            return
        aliases = self._aliases()
        for alias, mine in aliases.items():
            target = await self.sink.alias_target(alias)
            if target == mine:
                continue
            self.unpointed = True
            if target is not None or await self.sink.collection_exists(alias):
                self.backfilling = True
                self.history_cutoff = math.inf
        self.metrics.backfilling.labels(self.pipeline.name).set(int(self.backfilling))
        if self.backfilling:
            log.warning("backfilling", extra={"fields": {
                "pipeline": self.pipeline.name, "version": self.pipeline.version,
                "aliases": aliases}})

    async def _point_aliases(self) -> None:
        """Point every alias at this version's collection (each switch is atomic for
        that alias's readers); called once caught up, or at once on a first
        deployment. A collection not created yet (no event so far) waits a round."""
        assert self.sink is not None
        for alias, mine in self._aliases().items():
            if await self.sink.alias_target(alias) == mine:
                continue
            if not await self.sink.collection_exists(mine):
                return
            try:
                await self.sink.point_alias(alias, mine)
            except InvalidInputError as exc:  # ``alias`` is a plain collection
                log.error("cannot point alias %s at %s: %s (drop that collection to let "
                          "the switch happen)", alias, mine, exc)
                return
        self.unpointed = self.backfilling = False
        self.metrics.backfilling.labels(self.pipeline.name).set(0)
        log.warning("aliases pointed", extra={"fields": {
            "pipeline": self.pipeline.name, "version": self.pipeline.version,
            "aliases": self._aliases()}})

    # -- one batch ------------------------------------------------------------------
    def to_event(self, msg: Any) -> Event:
        p = self.pipeline
        seq, deliveries, published_at = ack_metadata(msg)
        headers = dict(msg.headers or {})
        event = Event(subject=msg.subject, raw=msg.data, headers=headers, seq=seq,
                      deliveries=deliveries, published_at=published_at,
                      event_id=headers.get(hdr.EVENT_ID) or headers.get(hdr.MSG_ID)
                      or f"{p.stream}:{seq}",
                      trace_id=hdr.trace_id_of(headers.get(hdr.TRACEPARENT))
                      or hdr.new_trace_id(), msg=msg)
        if event.deliveries > self.max_deliver:
            event.fail("deliver", f"delivered {event.deliveries} times without finishing "
                                  "(a worker died on it each time)", permanent=True)
            return event
        try:
            assert p.codec is not None and not isinstance(p.codec, str)
            event.data = p.codec.decode(msg.data)
        except Exception as exc:
            event.fail("decode", exc, permanent=True)
            return event
        try:
            if p.event_id is not None:
                event.event_id = str(read_field(event.data, p.event_id))
            key = read_field(event.data, p.key) if p.key is not None else headers.get(hdr.KEY)
            event.key = None if key is None else str(key)
        except (KeyError, TypeError) as exc:
            event.fail("decode", exc, permanent=True)
        return event

    async def run_batch(self, msgs: list[Any]) -> list[Event]:
        """One batch through every stage and settled, with nothing else in flight
        (the pipelined ``_process`` does the same per stage)."""
        events = self._events(msgs)
        for index in range(len(self.runners)):
            await self._run_stage(index, events)
        await self._settle(events)
        if self.on_settled is not None:
            self.on_settled(events)
        return events

    def _hold_followers(self, events: list[Event], stage: str) -> None:
        """After a failure that will be retried, later events of the same key in the
        batch wait for it (they are redelivered with it). Behind an event that is
        dead-lettered now, they go on."""
        held: set[str] = set()
        for e in events:
            if e.key is None:
                continue
            if (e.failure is not None and not e.failure.permanent
                    and (e.failure.held or e.deliveries < self.max_deliver)):
                held.add(e.key)
            elif e.live and e.key in held:
                e.fail(stage, f"held behind an earlier event of key {e.key!r} that failed",
                       held=True)

    async def _settle(self, events: list[Event]) -> None:
        p, m = self.pipeline, self.metrics
        backoff = p.retry_backoff_s or (1.0,)
        for e in events:
            if e.live or e.dropped:
                await e.msg.ack()
                m.events.labels(p.name, "dropped" if e.dropped else "done").inc()
                if e.applied_at is not None:
                    m.freshness.labels(p.name).observe(max(0.0, e.applied_at - e.published_at))
                continue
            assert e.failure is not None
            if e.failure.permanent or (e.deliveries >= self.max_deliver
                                       and not e.failure.held):
                try:
                    await self.dead_letter(e)
                except Exception as exc:  # not stored: keep the event, try again later
                    log.warning("dead letter of %s not stored: %s", e.event_id, exc)
                    await e.msg.nak(delay=backoff[-1])
                    continue
                await e.msg.ack()
                m.events.labels(p.name, "dead_lettered").inc()
                m.dead_letters.labels(p.name, e.failure.stage).inc()
            else:
                await e.msg.nak(delay=backoff[min(e.deliveries, len(backoff)) - 1])
                m.events.labels(p.name, "retried").inc()

    async def dead_letter(self, e: Event) -> None:
        """The original bytes and headers, plus where and why it failed; stored
        (JetStream acknowledged) before the event itself is acknowledged."""
        assert e.failure is not None
        headers = dict(e.headers)
        headers.update({
            hdr.MSG_ID: f"dlq:{self.pipeline.name}:{e.event_id}:{e.seq}",
            hdr.EVENT_ID: e.event_id,
            hdr.ORIGINAL_SEQ: str(e.version),
            hdr.DLQ_STAGE: e.failure.stage,
            hdr.DLQ_ERROR: _header_value(e.failure.error),
            hdr.DLQ_SUBJECT: e.subject,
            hdr.DLQ_SEQ: str(e.seq),
            hdr.DLQ_DELIVERIES: str(e.deliveries),
            hdr.DLQ_TIME: f"{time.time():.3f}",
        })
        if hdr.TRACEPARENT not in headers:
            headers[hdr.TRACEPARENT] = hdr.new_traceparent(e.trace_id)
        await self.js.publish(dead_letter_subject(self.settings, self.pipeline.name), e.raw,
                              headers=headers)
        log.warning("dead-lettered", extra={"fields": {
            "pipeline": self.pipeline.name, "event_id": e.event_id, "stage": e.failure.stage,
            "error": e.failure.error[:300], "trace_id": e.trace_id}})
