"""The vector store face: collections of vectors + payloads with filtered ANN search.

Two ways in. In a server, other faces and protocols use ``service``, the
front door. Embedded in a program, ``peregrine.open`` gives the ``Database``
and ``Collection`` API exported here.
"""

from peregrine.vector.collection.collection import Collection
from peregrine.vector.collection.database import Database, open_database
from peregrine.vector.errors import (
    CollectionNotFoundError,
    DimensionMismatchError,
    DuplicateIdError,
    InvalidFilterError,
    InvalidPayloadError,
    InvalidPointIdError,
    InvalidSnapshotError,
    InvalidVectorError,
    PointNotFoundError,
    SnapshotNotFoundError,
)
from peregrine.vector.types import (
    CollectionConfig,
    CollectionInfo,
    Hit,
    IndexConfig,
    Metric,
    Quantization,
    Record,
)

__all__ = [
    "Collection",
    "CollectionConfig",
    "CollectionInfo",
    "CollectionNotFoundError",
    "Database",
    "DimensionMismatchError",
    "DuplicateIdError",
    "Hit",
    "IndexConfig",
    "InvalidFilterError",
    "InvalidPayloadError",
    "InvalidPointIdError",
    "InvalidSnapshotError",
    "InvalidVectorError",
    "Metric",
    "PointNotFoundError",
    "Quantization",
    "Record",
    "SnapshotNotFoundError",
    "open_database",
]
