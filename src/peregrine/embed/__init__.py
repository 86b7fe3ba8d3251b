"""Text embedding and real-text corpora for Peregrine.

Importing this package is cheap: torch and sentence-transformers load only
when a :class:`TextEmbedder` is constructed, so the vector store itself does
not depend on the optional ``embed`` extra.
"""

from peregrine.embed.corpus import debian_descriptions, python_docstrings, real_text_corpus
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
    "debian_descriptions",
    "model_path",
    "python_docstrings",
    "real_text_corpus",
]
