"""Shared documents (CRDT) over HTTP, part of the ``/state`` protocol.

| route | what |
|---|---|
| ``GET /state/docs/{name}`` | ``{"data": {...}}``: the document's ``data`` map |
| ``PATCH /state/docs/{name}`` | merge an object into ``data`` (``null`` removes a key) |
| ``POST /state/docs/{name}/sync`` | ``{"update"?, "state_vector"?}`` (base64) -> |
| | ``{"update"}``: apply the client's Yjs update, answer what it lacks |

The sync route is one round of the Yjs sync protocol: a Yjs client sends its
state vector (and its own edits as an update) and applies the update it gets
back. Names are per tenant (``x-tenant``) and stored as HMACs.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from peregrine.core.errors import InvalidInputError
from peregrine.edge.http.protocol import Access, Call, Operation
from peregrine.state.service import StateService

_MAX_B64 = 1_400_000  # base64 of a 1 MiB update


class DocSync(BaseModel):
    model_config = ConfigDict(extra="forbid")
    update: str | None = Field(None, max_length=_MAX_B64)
    state_vector: str | None = Field(None, max_length=_MAX_B64)


def _b64(value: str | None, what: str) -> bytes | None:
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(f"{what} must be base64") from None


def doc_operations(state: StateService, tenant: Any) -> list[Operation]:
    async def read(call: Call) -> Any:
        return {"data": await call.run(state.read_doc, call.path["name"], tenant(call))}

    async def patch(call: Call) -> Any:
        changes: dict[str, Any] = call.body
        return {"data": await call.run(state.update_doc, call.path["name"], changes,
                                       tenant(call))}

    async def sync(call: Call) -> Any:
        body: DocSync = call.body
        update = _b64(body.update, "update")
        since = _b64(body.state_vector, "state_vector")
        name, who = call.path["name"], tenant(call)

        def run() -> bytes:
            if update:
                state.apply_doc_update(name, update, who)
            return state.doc_diff(name, since, who)

        return {"update": base64.b64encode(await call.run(run)).decode()}

    D = "/docs/{name}"
    return [
        Operation("GET", D, "read_doc", "state", "A shared document's data", read),
        Operation("PATCH", D, "update_doc", "state", "Merge into a shared document", patch,
                  Access.WRITE, dict[str, Any]),
        Operation("POST", D + "/sync", "sync_doc", "state",
                  "One round of Yjs sync with a shared document", sync, Access.WRITE,
                  DocSync, bulk=True),
    ]
