"""The error kinds every face shares.

A face raises its own subclasses of these (``vector.errors``); the edge maps
each kind to a status (400, 404, 409, 403, 408, 503) by class, never by
message text, and a library user can catch precisely what went wrong. Errors
caused by bad input are raised *before* anything is written: a rejected call
changes nothing.
"""

from __future__ import annotations


class PeregrineError(Exception):
    """Base class of all errors Peregrine raises on purpose."""


class InvalidInputError(PeregrineError, ValueError):
    """The request itself is malformed or exceeds a limit (the caller must change it)."""


class NotFoundError(PeregrineError, KeyError):
    """A named thing does not exist."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class AlreadyExistsError(PeregrineError):
    """A thing of that name exists already."""


class ForbiddenError(PeregrineError):
    """The request is well-formed but asks for something this server does not allow."""


class DeadlineExceededError(PeregrineError, TimeoutError):
    """The work ran past the deadline its caller set; nothing more was done after it."""


class StorageError(PeregrineError):
    """On-disk state is unusable (corrupt manifest, wrong format version)."""


class ClosedError(PeregrineError):
    """The store or service was closed."""


class UnavailableError(PeregrineError):
    """A component this work needs (the bus, a store) cannot be reached now; trying
    again later may succeed."""
