"""The stream-administration protocol, mounted at ``/streams`` on the shared edge.

Same keys, limits, metrics and traces as every protocol: reads need a read-only
key, replaying or deleting needs the full one. Answers use the envelope of the
Qdrant protocol beside it (``{"result": ..., "status": "ok", "time": s}``,
errors ``{"status": {"error": ...}, "time": s}``), so one client helper reads
both. Translation only: the stream face's front door does the work.

| route | what |
|---|---|
| ``GET /streams/pipelines`` | every pipeline: lag, in flight, redeliveries, dead letters |
| ``GET /streams/pipelines/{p}`` | one pipeline |
| ``DELETE /streams/pipelines/{p}`` | forget its position (the consumer) |
| ``GET /streams/pipelines/{p}/dead-letters?limit=&after=`` | its dead letters |
| ``POST /streams/pipelines/{p}/dead-letters/replay`` | ``{"seqs": [...]}`` or all |
| ``POST /streams/pipelines/{p}/dead-letters/delete`` | ``{"seqs": [...]}`` or all |
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from peregrine.edge.http.protocol import (
    Access,
    Call,
    NoParams,
    Operation,
    QueryModel,
    ResultEnvelope,
)
from peregrine.stream.service import StreamService

_MAX_SEQS = 1000


class DeadLetterPage(QueryModel):
    limit: int = Field(100, ge=1, le=1000)
    after: int = Field(0, ge=0)


class Selection(BaseModel):
    """Which dead letters: the listed sequences, or all of them when absent."""

    model_config = ConfigDict(extra="forbid")
    seqs: list[int] | None = Field(None, max_length=_MAX_SEQS)


class StreamsProtocol(ResultEnvelope):
    name = "streams"
    prefix = "/streams"

    def __init__(self, stream: StreamService) -> None:
        self.stream = stream

    def operations(self) -> list[Operation]:
        stream = self.stream
        P = "/pipelines/{pipeline}"

        async def list_pipelines(call: Call) -> Any:
            return await stream.pipelines()

        async def get_pipeline(call: Call) -> Any:
            return await stream.pipeline(call.path["pipeline"])

        async def delete_pipeline(call: Call) -> Any:
            return await stream.delete_pipeline(call.path["pipeline"])

        async def dead_letters(call: Call) -> Any:
            page: DeadLetterPage = call.params
            return await stream.list_dead_letters(call.path["pipeline"], page.limit, page.after)

        async def replay(call: Call) -> Any:
            body: Selection | None = call.body
            count = await stream.replay(call.path["pipeline"], body.seqs if body else None)
            return {"replayed": count}

        async def delete_letters(call: Call) -> Any:
            body: Selection | None = call.body
            count = await stream.delete_dead_letters(call.path["pipeline"],
                                                     body.seqs if body else None)
            return {"deleted": count}

        W = Access.WRITE
        return [
            Operation("GET", "/pipelines", "list_pipelines", "streams",
                      "Every pipeline on the bus, with its lag and dead letters",
                      list_pipelines, params=NoParams),
            Operation("GET", P, "get_pipeline", "streams", "One pipeline", get_pipeline),
            Operation("DELETE", P, "delete_pipeline", "streams",
                      "Remove a pipeline's consumer (its position); streams stay",
                      delete_pipeline, W),
            Operation("GET", P + "/dead-letters", "list_dead_letters", "streams",
                      "A page of the pipeline's dead letters", dead_letters,
                      params=DeadLetterPage),
            Operation("POST", P + "/dead-letters/replay", "replay_dead_letters", "streams",
                      "Publish dead letters back to their subjects, then delete them",
                      replay, W, Selection | None, body_required=False),
            Operation("POST", P + "/dead-letters/delete", "delete_dead_letters", "streams",
                      "Drop dead letters for good", delete_letters, W, Selection | None,
                      body_required=False),
        ]
