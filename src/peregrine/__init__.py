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
from peregrine.vector import (
    Collection,
    CollectionInfo,
    CollectionNotFoundError,
    Database,
    DimensionMismatchError,
    DuplicateIdError,
    Hit,
    IndexConfig,
    InvalidFilterError,
    InvalidPayloadError,
    InvalidPointIdError,
    InvalidSnapshotError,
    InvalidVectorError,
    Metric,
    Record,
)
from peregrine.vector import open_database as open

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError",
    "ClosedError",
    "Collection",
    "CollectionInfo",
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
