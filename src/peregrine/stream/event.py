"""One event as it moves through a pipeline's stages."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

# Headers Peregrine reads and writes on the bus.
MSG_ID = "Nats-Msg-Id"  # JetStream's de-duplication id: the event id when present
KEY = "Peregrine-Key"  # ordering key, when the payload does not name one
TRACEPARENT = "traceparent"  # W3C trace context, carried into every emitted result
EVENT_ID = "Peregrine-Event-Id"  # set on replays: the id of the original event
ORIGINAL_SEQ = "Peregrine-Original-Seq"  # set on replays: the version of the original
DLQ_STAGE = "Peregrine-Dlq-Stage"
DLQ_ERROR = "Peregrine-Dlq-Error"
DLQ_SUBJECT = "Peregrine-Dlq-Subject"
DLQ_SEQ = "Peregrine-Dlq-Seq"
DLQ_DELIVERIES = "Peregrine-Dlq-Deliveries"
DLQ_TIME = "Peregrine-Dlq-Time"


def new_trace_id() -> str:
    """128 random bits as W3C hex; from the process's PRNG, not the kernel's (a trace
    id must be unique, not secret, and this runs once per event)."""
    return f"{random.getrandbits(128):032x}"


def new_traceparent(trace_id: str | None = None) -> str:
    """A W3C ``traceparent`` with a fresh span id (and a fresh trace id if none)."""
    return f"00-{trace_id or new_trace_id()}-{random.getrandbits(64):016x}-01"


def trace_id_of(traceparent: str | None) -> str | None:
    parts = (traceparent or "").split("-")
    if len(parts) == 4 and len(parts[1]) == 32:
        return parts[1]
    return None


@dataclass
class Failure:
    """Why an event left the pipeline early. ``permanent`` ones go to the dead
    letters at once (poison: undecodable, schema-invalid); others are retried."""

    stage: str
    error: str
    permanent: bool
    held: bool = False  # not its own failure: waits for an earlier event of its key


@dataclass
class Event:
    """A decoded message and what the stages add to it (``data`` is the payload)."""

    subject: str
    raw: bytes
    headers: dict[str, str]
    seq: int  # stream sequence: the version of the writes this event makes
    deliveries: int
    published_at: float  # seconds since the epoch, from JetStream's metadata
    event_id: str
    key: str | None = None
    trace_id: str = ""
    data: Any = None
    failure: Failure | None = None
    dropped: bool = False  # a stage filtered it out: acknowledged, nothing more
    msg: Any = field(default=None, repr=False)  # the nats Msg, to ack/nak
    applied_at: float | None = None  # when its upsert was acknowledged by the store

    @property
    def version(self) -> int:
        """The version of this event's writes: its stream sequence, or for a replayed
        dead letter the sequence of the original (a replay is not newer)."""
        original = self.headers.get(ORIGINAL_SEQ)
        return int(original) if original and original.isdigit() else self.seq

    @property
    def live(self) -> bool:
        return self.failure is None and not self.dropped

    def fail(self, stage: str, error: BaseException | str, permanent: bool = False,
             held: bool = False) -> None:
        if self.failure is None:
            text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            self.failure = Failure(stage, text[:2000], permanent, held)
