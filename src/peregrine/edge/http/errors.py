"""How an error becomes an HTTP status and a message: by its kind, never its text."""

from __future__ import annotations

from pydantic import ValidationError

from peregrine.core.errors import (
    AlreadyExistsError,
    ClosedError,
    DeadlineExceededError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    PeregrineError,
    UnavailableError,
)
from peregrine.edge.http.protocol import HttpError


def status_of(exc: BaseException) -> int:
    """The status of an error, by its kind (never by its message)."""
    if isinstance(exc, HttpError):
        return exc.status
    if isinstance(exc, ValidationError | InvalidInputError):
        return 400
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, AlreadyExistsError):
        return 409
    if isinstance(exc, ForbiddenError):
        return 403
    if isinstance(exc, DeadlineExceededError):
        return 408
    if isinstance(exc, ClosedError | UnavailableError):
        return 503
    return 500


_KINDS = ((NotFoundError, "Not found"), (ForbiddenError, "Forbidden"),
          (DeadlineExceededError, "Timeout"), (ClosedError, "Service unavailable"),
          (UnavailableError, "Service unavailable"))


def message_of(exc: BaseException) -> str:
    if isinstance(exc, HttpError):
        return exc.message
    if isinstance(exc, ValidationError):
        return f"Format error in request: {exc.errors(include_url=False)[0]['msg']}"
    if isinstance(exc, PeregrineError):
        kind = next((word for cls, word in _KINDS if isinstance(exc, cls)), "Wrong input")
        text = str(exc)
        return text if text.startswith(kind + ":") else f"{kind}: {text}"
    return "Service internal error: see the server log for this request id"
