"""Listing and replaying what a pipeline dead-lettered.

Dead letters live in the ``PG_DLQ`` stream under ``<dlq_prefix>.<pipeline>``,
each the original bytes and headers plus the stage, error, subject, sequence and
delivery count. A replay publishes the original back to its subject (keeping the
original version, so a replay never overwrites a newer write) and then deletes
the dead letter; a crash in between replays it at most twice, which the
versioned writes absorb.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from nats.js.errors import NotFoundError

from peregrine.stream import event as hdr
from peregrine.stream.jetstream import DLQ_STREAM, dead_letter_subject
from peregrine.stream.settings import StreamSettings

_PAGE = 100  # dead letters read and replayed at a time
_DLQ_HEADERS = (hdr.DLQ_STAGE, hdr.DLQ_ERROR, hdr.DLQ_SUBJECT, hdr.DLQ_SEQ,
                hdr.DLQ_DELIVERIES, hdr.DLQ_TIME)


@dataclass(frozen=True)
class DeadLetter:
    seq: int  # in the dead-letter stream
    pipeline: str
    subject: str  # where the event was published
    original_seq: int
    stage: str
    error: str
    deliveries: int
    failed_at: float
    event_id: str
    headers: dict[str, str]  # the original event's
    data: bytes

    def summary(self) -> dict[str, Any]:
        return {"seq": self.seq, "pipeline": self.pipeline, "subject": self.subject,
                "original_seq": self.original_seq, "event_id": self.event_id,
                "stage": self.stage, "error": self.error, "deliveries": self.deliveries,
                "failed_at": self.failed_at, "bytes": len(self.data)}


def _dead_letter(seq: int, pipeline: str, headers: dict[str, str], data: bytes) -> DeadLetter:
    original = {k: v for k, v in headers.items() if k not in _DLQ_HEADERS}
    return DeadLetter(
        seq=seq, pipeline=pipeline, subject=headers.get(hdr.DLQ_SUBJECT, ""),
        original_seq=int(headers.get(hdr.ORIGINAL_SEQ) or headers.get(hdr.DLQ_SEQ) or 0),
        stage=headers.get(hdr.DLQ_STAGE, ""), error=headers.get(hdr.DLQ_ERROR, ""),
        deliveries=int(headers.get(hdr.DLQ_DELIVERIES) or 0),
        failed_at=float(headers.get(hdr.DLQ_TIME) or 0), event_id=headers.get(hdr.EVENT_ID, ""),
        headers=original, data=data)


class DeadLetters:
    def __init__(self, js: Any, settings: StreamSettings) -> None:
        self.js, self.settings = js, settings

    async def read(self, pipeline: str, limit: int = 100, after: int = 0) -> list[DeadLetter]:
        """Up to ``limit`` dead letters of ``pipeline`` with a sequence above ``after``."""
        subject = dead_letter_subject(self.settings, pipeline)
        out: list[DeadLetter] = []
        seq = after + 1
        while len(out) < limit:
            try:
                msg = await self.js.get_msg(DLQ_STREAM, seq=seq, subject=subject, next=True)
            except NotFoundError:
                break
            out.append(_dead_letter(msg.seq, pipeline, dict(msg.headers or {}),
                                    msg.data or b""))
            seq = msg.seq + 1
        return out

    async def replay(self, pipeline: str, seqs: list[int] | None = None) -> int:
        """Publish dead letters back to their subjects (all when ``seqs`` is None) and
        delete them, a page at a time (memory stays bounded whatever the backlog).
        Returns how many were replayed."""
        if seqs is not None:
            letters = []
            for seq in seqs:
                with contextlib.suppress(NotFoundError):
                    msg = await self.js.get_msg(DLQ_STREAM, seq=seq)
                    if msg.subject == dead_letter_subject(self.settings, pipeline):
                        letters.append(_dead_letter(msg.seq, pipeline, dict(msg.headers or {}),
                                                    msg.data or b""))
            return await self._republish(letters)
        replayed, after = 0, 0
        while page := await self.read(pipeline, _PAGE, after):
            replayed += await self._republish(page)
            after = page[-1].seq
        return replayed

    async def _republish(self, letters: list[DeadLetter]) -> int:
        for letter in letters:
            headers = dict(letter.headers)
            headers[hdr.EVENT_ID] = letter.event_id
            headers[hdr.ORIGINAL_SEQ] = str(letter.original_seq)
            # A fresh de-duplication id: the original's would be dropped as a duplicate.
            headers[hdr.MSG_ID] = f"replay:{letter.event_id}:{letter.seq}"
            await self.js.publish(letter.subject, letter.data, headers=headers)
            with contextlib.suppress(NotFoundError):
                await self.js.delete_msg(DLQ_STREAM, letter.seq)
        return len(letters)
