"""Peregrine: a low-latency data plane for real-time AI applications.

``peregrine.open(path)`` opens the embedded vector store.
"""

from peregrine.core.errors import (
    AlreadyExistsError,
    ClosedError,
    InvalidInputError,
    NotFoundError,
    PeregrineError,
    StorageError,
)
from peregrine.vector import Collection, Database, Hit, IndexConfig, Metric, Record
from peregrine.vector import open_database as open
from peregrine.vector.errors import (
    CollectionNotFoundError,
    DimensionMismatchError,
    DuplicateIdError,
    InvalidFilterError,
    InvalidPayloadError,
    InvalidPointIdError,
    InvalidSnapshotError,
    InvalidVectorError,
)

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError",
    "ClosedError",
    "Collection",
    "CollectionNotFoundError",
    "Database",
    "DimensionMismatchError",
    "DuplicateIdError",
    "Hit",
    "IndexConfig",
    "InvalidFilterError",
    "InvalidInputError",
    "InvalidPayloadError",
    "InvalidPointIdError",
    "InvalidSnapshotError",
    "InvalidVectorError",
    "Metric",
    "NotFoundError",
    "PeregrineError",
    "Record",
    "StorageError",
    "__version__",
    "open",
]
