"""The sessions protocol, mounted at ``/sessions`` on the shared edge.

Bodies and answers are plain JSON objects (no envelope), errors
``{"error": "..."}`` with a 4xx/5xx status; keys, limits, metrics and traces
are the edge's, as for every protocol. A tenant may be named in the
``x-tenant`` header (default ``default``); ids are stored only as HMACs.

| route | what |
|---|---|
| ``POST /sessions/{id}/turns`` | ``{"role", "content"}`` -> ``{"turn_id", "ts"}`` |
| ``GET /sessions/{id}/turns?last=N`` | ``{"turns": [{"turn_id", "role", "content",
"ts"}]}``, oldest first; ``?budget_tokens=T``: the recent turns that fit T tokens |
| ``DELETE /sessions/{id}`` | ``{"deleted": true|false}`` |
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from peregrine.edge.http.protocol import Access, Call, Operation, Protocol, QueryModel
from peregrine.edge.sessions.caches import cache_operations
from peregrine.edge.sessions.docs import doc_operations
from peregrine.state.service import MAX_READ, StateService


class NewTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = Field(min_length=1, max_length=64)
    content: str


class LastTurns(QueryModel):
    last: int = Field(20, ge=0, le=MAX_READ)
    budget_tokens: int | None = Field(None, ge=0, le=10_000_000)


def _tenant(call: Call) -> str:
    for name, value in call.scope.get("headers", []):
        if name == b"x-tenant":
            return str(value.decode("latin-1"))
    return "default"


class SessionsProtocol(Protocol):
    name = "sessions"
    prefix = "/sessions"

    def __init__(self, state: StateService) -> None:
        self.state = state

    def operations(self) -> list[Operation]:
        state = self.state

        async def append(call: Call) -> Any:
            body: NewTurn = call.body
            turn = await call.run(state.append_turn, call.path["session_id"], body.role,
                                  body.content, _tenant(call))
            return {"turn_id": turn.turn_id, "ts": turn.ts}

        async def last(call: Call) -> Any:
            params: LastTurns = call.params
            if params.budget_tokens is not None:  # the recent turns that fit a prompt
                turns = await call.run(lambda: state.turns_within(
                    call.path["session_id"], params.budget_tokens or 0,
                    tenant=_tenant(call)))
            else:
                turns = await call.run(state.last_turns, call.path["session_id"],
                                       params.last, _tenant(call))
            return {"turns": [t.as_dict() for t in turns]}

        async def delete(call: Call) -> Any:
            deleted = await call.run(state.delete_session, call.path["session_id"],
                                     _tenant(call))
            return {"deleted": deleted}

        S = "/{session_id}"
        return [
            Operation("POST", S + "/turns", "append_turn", "sessions",
                      "Append a turn to a session", append, Access.WRITE, NewTurn),
            Operation("GET", S + "/turns", "last_turns", "sessions",
                      "The last N turns of a session, oldest first", last, params=LastTurns),
            Operation("DELETE", S, "delete_session", "sessions", "Remove a session", delete,
                      Access.WRITE),
        ]


class StateProtocol(Protocol):
    """Durable per-user and per-device settings, at ``/state``:
    ``GET /state/{kind}/{id}/settings`` and ``PATCH`` (merge; ``null`` removes a
    setting), ``kind`` ``user`` or ``device``; the caches (``caches.py``) and shared
    documents (``docs.py``)."""

    name = "state"
    prefix = "/state"

    def __init__(self, state: StateService) -> None:
        self.state = state

    def operations(self) -> list[Operation]:
        state = self.state

        async def get_settings(call: Call) -> Any:
            return await call.run(state.get_settings, call.path["kind"], call.path["ident"],
                                  _tenant(call))

        async def patch_settings(call: Call) -> Any:
            changes: dict[str, Any] = call.body
            return await call.run(state.update_settings, call.path["kind"],
                                  call.path["ident"], changes, _tenant(call))

        S = "/{kind}/{ident}/settings"
        return [*cache_operations(state, _tenant), *doc_operations(state, _tenant),
            Operation("GET", S, "get_settings", "state", "A user's or device's settings",
                      get_settings),
            Operation("PATCH", S, "update_settings", "state",
                      "Merge settings (null removes one)", patch_settings, Access.WRITE,
                      dict[str, Any]),
        ]
