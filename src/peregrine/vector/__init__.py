"""The vector store face: collections of vectors + payloads with filtered ANN search."""

from peregrine.vector.collection.collection import Collection
from peregrine.vector.collection.database import Database, open_database
from peregrine.vector.types import CollectionConfig, Hit, IndexConfig, Metric, Quantization, Record

__all__ = [
    "Collection",
    "CollectionConfig",
    "Database",
    "Hit",
    "IndexConfig",
    "Metric",
    "Quantization",
    "Record",
    "open_database",
]
