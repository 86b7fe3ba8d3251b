"""Qdrant's REST protocol: its envelope, its error bodies and statuses, its routes.

Mounted at the root, because Qdrant's clients address ``/collections/...``.
Successes are ``{"result": ..., "status": "ok", "time": s}``; errors
``{"status": {"error": "..."}, "time": s}``; work left running is 202
``{"status": "accepted", "time": s}``. As in Qdrant, a body that does not
parse as the request (wrong type, unknown variant) is a 400 "Format error",
while a well-formed body that breaks a constraint (a limit of 0, a size out
of range) is a 422 "Validation error" listing each violation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from peregrine.core.settings import Section, field
from peregrine.edge.http.health import health_operations
from peregrine.edge.http.protocol import (
    HttpError,
    Operation,
    ResultEnvelope,
    describe_validation,
)
from peregrine.vector.service import VectorService


@dataclass(frozen=True)
class QdrantSettings(Section):
    # What GET / reports as "version": the Qdrant API level served, so that
    # qdrant-client's compatibility check passes (clients 1.15-1.17 accept 1.16
    # silently; newer ones only warn).
    version: str = field("1.16.0", "the Qdrant API version GET / reports")


# pydantic error kinds that are constraint violations of a well-formed body
# (Qdrant's `validator` checks, answered 422); any other kind means the body is
# not the request at all (serde's errors, answered 400).
_CONSTRAINTS = frozenset({
    "greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_short",
    "too_long", "string_too_short", "string_too_long", "string_pattern_mismatch",
    "multiple_of",
})
_BOUND_TEXT = {
    "greater_than": ("gt", "must be greater than {}"),
    "greater_than_equal": ("ge", "must be {} or larger"),
    "less_than": ("lt", "must be less than {}"),
    "less_than_equal": ("le", "must be {} or smaller"),
}


class QdrantProtocol(ResultEnvelope):
    name = "qdrant"
    prefix = ""

    def __init__(self, vector: VectorService, settings: QdrantSettings | None = None) -> None:
        self.vector = vector
        self.settings = settings or QdrantSettings()
        self._openapi: bytes | None = None

    def operations(self) -> list[Operation]:
        from peregrine.edge.qdrant.routes import all_operations

        return all_operations(self)

    @property
    def openapi(self) -> bytes:
        if self._openapi is None:
            from peregrine.edge.qdrant.openapi import build_openapi

            self._openapi = orjson.dumps(build_openapi([*health_operations(),
                                                        *self.operations()]))
        return self._openapi

    def validation_error(self, exc: ValidationError, where: str) -> HttpError:
        errors = exc.errors(include_url=False)
        if errors and all(e["type"] in _CONSTRAINTS for e in errors):
            listed = "; ".join(_violation(e) for e in errors)
            return HttpError(422, f"Validation error in {where}: [{listed}]")
        prefix = ("Deserialize error in query parameters" if where == "query parameters"
                  else f"Format error in {where}")
        return HttpError(400, describe_validation(exc, prefix))


def _violation(error: Any) -> str:
    loc = ".".join(str(p) for p in error["loc"]) or "body"
    bound = _BOUND_TEXT.get(error["type"])
    ctx = error.get("ctx") or {}
    if bound is not None and bound[0] in ctx:
        value = orjson.dumps(error.get("input"), default=str).decode()
        return f"{loc}: value {value} invalid, {bound[1].format(ctx[bound[0]])}"
    return f"{loc}: {error['msg']}"
