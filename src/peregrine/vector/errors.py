"""Errors of the vector store, each a subclass of one of the shared kinds."""

from __future__ import annotations

from peregrine.core.errors import InvalidInputError, NotFoundError


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
    """A filter does not follow the Qdrant filter language or exceeds its limits."""


class InvalidSnapshotError(InvalidInputError):
    """A file offered as a snapshot is not one, or its contents do not load."""


class CollectionNotFoundError(NotFoundError):
    """No collection of that name."""


class AliasNotFoundError(NotFoundError):
    """No alias of that name (renaming one that does not exist)."""


class PointNotFoundError(NotFoundError):
    """A point referenced by id (as a query or an example) does not exist."""


class SnapshotNotFoundError(NotFoundError):
    """No snapshot of that name for that collection."""
