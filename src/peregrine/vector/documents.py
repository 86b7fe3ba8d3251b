"""Text turned into vectors by the store itself (Qdrant's ``Document`` inference).

A client may send ``{"text": ..., "model": ...}`` wherever a sparse vector goes,
at upsert and at query time; the store runs the model. The one model here is
BM25 (``bm25.py``, the ``Qdrant/bm25`` model's scheme), which needs no weights:
a document becomes its term-frequency part, a query its distinct terms, and a
sparse vector with ``modifier: idf`` supplies the IDF, so that the dot product
is the BM25 score. Dense models are not run server-side: an embedding model
for documents belongs to the streams face's embed stage.

Also here: splitting the per-point vectors a protocol sends (one unnamed array,
or {name: vector}) into the engine's primary matrix and side vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from peregrine.core.errors import InvalidInputError
from peregrine.vector.bm25 import Bm25Encoder
from peregrine.vector.types import CollectionConfig, SparseVector

MODELS = ("qdrant/bm25", "bm25")  # accepted names, compared case-insensitively


@dataclass(frozen=True, slots=True)
class Document:
    """A text for server-side inference by ``model``."""

    text: str
    model: str


class DocumentEncoder:
    """Documents to sparse vectors, for vector ``name`` of a collection."""

    def __init__(self) -> None:
        self._bm25 = Bm25Encoder()

    def _check(self, doc: Document, config: CollectionConfig, name: str) -> None:
        if doc.model.lower() not in MODELS:
            raise InvalidInputError(f"model {doc.model!r} is not available: the store infers "
                                    "sparse vectors with 'Qdrant/bm25' only")
        if config.vector_kind(name) != "sparse":
            raise InvalidInputError(f"a {doc.model!r} document makes a sparse vector; "
                                    f"{name!r} is dense")

    def document(self, doc: Document, config: CollectionConfig, name: str) -> SparseVector:
        self._check(doc, config, name)
        return self._bm25.encode_documents([doc.text])[0]

    def query(self, doc: Document, config: CollectionConfig, name: str) -> SparseVector:
        self._check(doc, config, name)
        return self._bm25.encode_queries([doc.text])[0]


def split_points(config: CollectionConfig, vectors: Sequence[Any], encoder: DocumentEncoder
                 ) -> tuple[np.ndarray | list[Any] | None, list[dict[str, Any]] | None]:
    """(primary vectors as rows, or None in a collection without a dense vector;
    each point's other vectors, or None when no point has any). A point's
    vectors are one array (the unnamed vector, "") or {name: vector}; a point
    may lack a named primary vector (its row is then None), not an unnamed one."""
    name = config.vector_name
    if config.dense and all((isinstance(v, dict) and len(v) == 1 and name in v)
                            or (not isinstance(v, dict) and name == "") for v in vectors):
        # The common shape: every point carries the primary vector alone.
        only = [v[name] if isinstance(v, dict) else v for v in vectors]
        return _rows(only, config), None
    primary: list[Any] = []
    side: list[dict[str, Any]] = []
    for i, given in enumerate(vectors):
        named = dict(given) if isinstance(given, dict) else {"": given}
        for name in named:
            config.vector_kind(name)  # an unknown name is an error, as Qdrant answers
        if config.dense:
            if config.vector_name not in named and not config.vector_name:
                raise InvalidInputError(f"point #{i} lacks the collection's vector")
            primary.append(named.pop(config.vector_name, None))
        side.append({name: encoder.document(v, config, name) if isinstance(v, Document) else v
                     for name, v in named.items()})
    if not config.dense:
        return None, side
    return _rows(primary, config), side


def _rows(primary: list[Any], config: CollectionConfig) -> np.ndarray | list[Any]:
    """The primary vectors as one matrix when they are alike (the engine checks them)."""
    if any(isinstance(p, (Document, dict)) for p in primary):
        raise InvalidInputError(f"vector {config.vector_name!r} is dense: send an array of "
                                "numbers (dense models are not run by the store)")
    if primary and all(isinstance(p, np.ndarray) for p in primary) and len(
            {p.shape for p in primary}) == 1:
        return np.stack(primary)
    return primary if primary else np.empty((0, config.dim), np.float32)
