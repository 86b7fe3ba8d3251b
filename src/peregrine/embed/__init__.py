"""Text embedding for Peregrine.

Importing this package is cheap: torch and sentence-transformers load only
when a :class:`TextEmbedder` is constructed, so the vector store itself does
not depend on the optional ``embed`` extra.
"""

from peregrine.embed.embedder import (
    EMBED_DIM,
    MODEL_NAME,
    EmbedDependencyError,
    TextEmbedder,
    model_path,
)

__all__ = [
    "EMBED_DIM",
    "MODEL_NAME",
    "EmbedDependencyError",
    "TextEmbedder",
    "model_path",
]
