"""Streams and consumers, created or updated idempotently from a pipeline.

Every worker of a pipeline runs this at start-up, so two starting at once must
both succeed: creation races are retried as updates, and a stream that already
exists keeps its subjects plus the pipeline's source.
"""

from __future__ import annotations

from typing import Any

from nats.js import api
from nats.js.errors import BadRequestError, NotFoundError

from peregrine.stream.pipeline import Pipeline
from peregrine.stream.settings import StreamSettings

DLQ_STREAM = "PG_DLQ"
# Dead letters are kept 30 days unless replayed or deleted first.
DLQ_MAX_AGE_S = 30 * 24 * 3600.0
# Producers may retry a publish with the same Nats-Msg-Id within this window.
DUPLICATE_WINDOW_S = 120.0


async def ensure_stream(js: Any, name: str, subjects: list[str],
                        max_age_s: float | None = None) -> api.StreamInfo:
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        config = api.StreamConfig(name=name, subjects=subjects, storage=api.StorageType.FILE,
                                  duplicate_window=DUPLICATE_WINDOW_S, max_age=max_age_s)
        try:
            created: api.StreamInfo = await js.add_stream(config)
            return created
        except BadRequestError:  # another worker created it meanwhile
            info = await js.stream_info(name)
    have = list(info.config.subjects or [])
    missing = [s for s in subjects if s not in have]
    if not missing:
        return info  # type: ignore[no-any-return]
    config = info.config.evolve(subjects=have + missing)
    updated: api.StreamInfo = await js.update_stream(config)
    return updated


async def ensure_pipeline(js: Any, pipeline: Pipeline, settings: StreamSettings) -> None:
    """The pipeline's stream, its durable consumer, and the dead-letter stream."""
    assert pipeline.stream is not None
    await ensure_stream(js, pipeline.stream, [pipeline.source])
    await ensure_stream(js, DLQ_STREAM, [f"{settings.dlq_prefix}.>"], DLQ_MAX_AGE_S)
    await js.add_consumer(pipeline.stream, consumer_config(pipeline, settings))


def max_deliver(pipeline: Pipeline, settings: StreamSettings) -> int:
    return pipeline.max_deliver or settings.max_deliver


def consumer_config(pipeline: Pipeline, settings: StreamSettings) -> api.ConsumerConfig:
    # One delivery more than the retry limit: an event that keeps killing its
    # worker (so never fails "normally") is dead-lettered on that extra delivery
    # instead of the server dropping it silently from the consumer.
    described = f"peregrine pipeline {pipeline.name}"
    if pipeline.version is not None:
        described += f" version {pipeline.version}"
    return api.ConsumerConfig(
        name=pipeline.consumer, durable_name=pipeline.consumer, description=described,
        deliver_policy=api.DeliverPolicy.ALL, ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=pipeline.ack_wait_s or settings.ack_wait_s,
        max_deliver=max_deliver(pipeline, settings) + 1,
        max_ack_pending=pipeline.max_ack_pending or settings.max_ack_pending,
        filter_subject=pipeline.source,
    )


def dead_letter_subject(settings: StreamSettings, pipeline: str) -> str:
    return f"{settings.dlq_prefix}.{pipeline}"
