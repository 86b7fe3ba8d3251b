"""Qdrant's REST API over the vector face, mounted at the root."""

from peregrine.edge.qdrant.protocol import QdrantProtocol, QdrantSettings

__all__ = ["QdrantProtocol", "QdrantSettings"]
