"""HTTP status of every error, and Qdrant's error body.

Engine errors are typed, so the mapping is by class, never by message text.
Anything unexpected is a 500 and is logged with its traceback: the fuzzer in
the test suite keeps that set empty.
"""

from __future__ import annotations

import time

import orjson
from pydantic import ValidationError

from peregrine.core.errors import (
    AlreadyExistsError,
    ClosedError,
    InvalidInputError,
    NotFoundError,
    PeregrineError,
)


class ApiError(Exception):
    """An error the HTTP layer itself decides (auth, limits, media types)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def describe_validation(exc: ValidationError, where: str) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    suffix = f" (and {more} more)" if more > 0 else ""
    return f"Format error in {where}: " + "; ".join(parts) + suffix


def status_of(exc: BaseException) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, ValidationError | InvalidInputError):
        return 400
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, AlreadyExistsError):
        return 409
    if isinstance(exc, ClosedError):
        return 503
    return 500


def message_of(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return exc.message
    if isinstance(exc, ValidationError):
        return describe_validation(exc, "request")
    if isinstance(exc, PeregrineError):
        kind = "Not found" if isinstance(exc, NotFoundError) else "Wrong input"
        if isinstance(exc, ClosedError):
            kind = "Service unavailable"
        return f"{kind}: {exc}"
    return "Service internal error: see the server log for this request id"


def error_body(message: str, started: float) -> bytes:
    """Qdrant's error envelope: {"status": {"error": ...}, "time": seconds}."""
    return orjson.dumps({"status": {"error": message}, "time": time.perf_counter() - started})
