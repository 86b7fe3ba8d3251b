"""Text embedding for Peregrine.

Importing this package is cheap: torch and sentence-transformers load only
when a :class:`TextEmbedder` is constructed, so the vector store itself does
not depend on the optional ``embed`` extra.
"""

from peregrine.embed.cache import CachedEmbedder, normalize_text, text_key
from peregrine.embed.embedder import (
    EMBED_DIM,
    MODEL_NAME,
    EmbedDependencyError,
    TextEmbedder,
    model_path,
)
from peregrine.embed.remote import RemoteEmbedder, RemoteEmbedError

__all__ = [
    "EMBED_DIM",
    "MODEL_NAME",
    "CachedEmbedder",
    "EmbedDependencyError",
    "RemoteEmbedError",
    "RemoteEmbedder",
    "TextEmbedder",
    "model_path",
    "normalize_text",
    "text_key",
]
