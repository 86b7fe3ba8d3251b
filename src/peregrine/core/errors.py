"""Typed errors.

Every failure a caller can provoke with bad input maps to one of these, so the
HTTP layer can translate them to 4xx responses without string matching, and a
library user can catch precisely what went wrong. All of them are raised
*before* anything is written: a rejected call changes nothing.
"""

from __future__ import annotations


class PeregrineError(Exception):
    """Base class of all errors Peregrine raises on purpose."""


class InvalidInputError(PeregrineError, ValueError):
    """The request itself is malformed (the caller must change it)."""


class DimensionMismatchError(InvalidInputError):
    """A vector does not have the collection's dimension."""


class InvalidVectorError(InvalidInputError):
    """A vector holds NaN/inf or non-numeric values."""


class InvalidPointIdError(InvalidInputError):
    """A point id is neither an unsigned 64-bit integer nor a UUID."""


class DuplicateIdError(InvalidInputError):
    """The same point id appears twice inside one batch."""


class InvalidPayloadError(InvalidInputError):
    """A payload is not a JSON object or cannot be serialised as JSON."""


class InvalidFilterError(InvalidInputError):
    """A filter does not follow the Qdrant filter language."""


class InvalidSnapshotError(InvalidInputError):
    """A file offered as a snapshot is not one (or its checksum does not match)."""


class NotFoundError(PeregrineError, KeyError):
    """A named thing does not exist."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class CollectionNotFoundError(NotFoundError):
    """No collection of that name."""


class AlreadyExistsError(PeregrineError):
    """A collection (or index) of that name exists already."""


class StorageError(PeregrineError):
    """On-disk state is unusable (corrupt manifest, wrong format version)."""


class ClosedError(PeregrineError):
    """The database or collection was closed."""
