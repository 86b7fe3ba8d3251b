"""What operators see and do: pipelines, their lag, their dead letters.

The truth lives in JetStream, not in any worker: a pipeline is a durable
consumer whose description starts with ``peregrine pipeline``, its lag is that
consumer's pending count, its workers are the pull requests waiting on it, and
its dead letters are messages under ``<dlq_prefix>.<pipeline>`` in ``PG_DLQ``.
So the server, the CLI and any number of workers all see the same picture, and
nothing has to be registered anywhere.
"""

from __future__ import annotations

import contextlib
from typing import Any

from nats.js.errors import NotFoundError as JsNotFoundError

from peregrine.core.errors import InvalidInputError, NotFoundError
from peregrine.stream.deadletter import DeadLetters
from peregrine.stream.jetstream import DLQ_STREAM, dead_letter_subject
from peregrine.stream.pipeline import NAME
from peregrine.stream.settings import StreamSettings

_MARK = "peregrine pipeline "
MAX_LIST = 1000  # dead letters per page


def _check_name(name: str) -> None:
    if not NAME.match(name):
        raise InvalidInputError(f"pipeline name {name!r}: 1-64 of A-Z a-z 0-9 _ -")


def _described(description: str) -> tuple[str, str | None]:
    """(pipeline, version) from ``peregrine pipeline NAME[ version V]``."""
    name, _, version = description[len(_MARK):].partition(" version ")
    return name, version or None


def _summary(info: Any, dead: dict[str, int]) -> dict[str, Any]:
    config = info.config
    pipeline, version = _described(config.description or "")
    return {
        "name": info.name,  # the consumer: the pipeline's name, with _<version> if any
        "pipeline": pipeline,
        "version": version,
        "stream": info.stream_name,
        "source": config.filter_subject,
        "lag": info.num_pending or 0,  # in the stream, not yet delivered
        "in_flight": info.num_ack_pending or 0,  # delivered, not yet acknowledged
        "redelivered": info.num_redelivered or 0,
        "waiting_pulls": info.num_waiting or 0,  # ~ idle worker fetches
        "delivered_seq": info.delivered.stream_seq if info.delivered else 0,
        "acked_seq": info.ack_floor.stream_seq if info.ack_floor else 0,
        "dead_letters": dead.get(pipeline, 0),  # dead letters are per pipeline
        "max_deliver": (config.max_deliver or 1) - 1,  # one extra is kept for crash loops
        "max_ack_pending": config.max_ack_pending,
        "ack_wait_s": config.ack_wait,
        "paused": bool(getattr(info, "paused", False)),
    }


class StreamAdmin:
    """Operations over one JetStream context (``js``)."""

    def __init__(self, js: Any, settings: StreamSettings) -> None:
        self.js, self.settings = js, settings

    async def _dead_counts(self) -> dict[str, int]:
        prefix = self.settings.dlq_prefix + "."
        try:
            info = await self.js.stream_info(DLQ_STREAM, subjects_filter=prefix + ">")
        except JsNotFoundError:
            return {}
        subjects = info.state.subjects or {}
        return {s[len(prefix):]: n for s, n in subjects.items() if s.startswith(prefix)}

    async def pipelines(self) -> list[dict[str, Any]]:
        """Every pipeline on the bus, with its lag and dead-letter count."""
        dead = await self._dead_counts()
        out = []
        for stream in await self.js.streams_info():
            if stream.config.name == DLQ_STREAM:
                continue
            for info in await self.js.consumers_info(stream.config.name):
                if (info.config.description or "").startswith(_MARK):
                    out.append(_summary(info, dead))
        return sorted(out, key=lambda p: p["name"])

    async def pipeline(self, name: str) -> dict[str, Any]:
        _check_name(name)
        for found in await self.pipelines():
            if found["name"] == name:
                return found
        raise NotFoundError(f"pipeline {name!r} not found (no worker has started it)")

    async def dead_letters(self, name: str, limit: int = 100, after: int = 0
                           ) -> list[dict[str, Any]]:
        _check_name(name)
        if not 1 <= limit <= MAX_LIST or after < 0:
            raise InvalidInputError(f"limit must be 1..{MAX_LIST} and after >= 0")
        try:
            letters = await DeadLetters(self.js, self.settings).read(name, limit, after)
        except JsNotFoundError:
            return []
        return [d.summary() for d in letters]

    async def replay(self, name: str, seqs: list[int] | None = None) -> int:
        _check_name(name)
        self._check_seqs(seqs)
        try:
            return await DeadLetters(self.js, self.settings).replay(name, seqs)
        except JsNotFoundError:
            return 0

    async def delete_dead_letters(self, name: str, seqs: list[int] | None = None) -> int:
        """Drop dead letters for good (all of the pipeline's when ``seqs`` is None)."""
        _check_name(name)
        self._check_seqs(seqs)
        subject = dead_letter_subject(self.settings, name)
        if seqs is None:
            counts = await self._dead_counts()
            if counts.get(name):
                await self.js.purge_stream(DLQ_STREAM, subject=subject)
            return counts.get(name, 0)
        deleted = 0
        for seq in seqs:
            with contextlib.suppress(JsNotFoundError):
                msg = await self.js.get_msg(DLQ_STREAM, seq=seq)
                if msg.subject == subject:
                    await self.js.delete_msg(DLQ_STREAM, seq)
                    deleted += 1
        return deleted

    async def delete_pipeline(self, name: str) -> bool:
        """Remove the pipeline's consumer (its position); the stream and the dead
        letters stay. A worker started again begins from the stream's start."""
        found = await self.pipeline(name)
        try:
            await self.js.delete_consumer(found["stream"], name)
        except JsNotFoundError:
            return False
        return True

    @staticmethod
    def _check_seqs(seqs: list[int] | None) -> None:
        if seqs is not None and (len(seqs) > MAX_LIST or any(s < 1 for s in seqs)):
            raise InvalidInputError(f"seqs: at most {MAX_LIST} positive sequence numbers")
