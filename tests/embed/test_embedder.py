"""The real embedder (bundled all-MiniLM-L6-v2 weights) and the offline corpora."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")

from peregrine.demo_corpus import python_docstrings
from peregrine.embed.embedder import TextEmbedder


@pytest.fixture(scope="module")
def embedder() -> TextEmbedder:
    return TextEmbedder()


def test_embeddings_are_normalised_and_semantic(embedder: TextEmbedder) -> None:
    texts = ["open a network socket", "connect to a TCP server", "bake a chocolate cake"]
    vecs = embedder.encode(texts)
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[0, 2] + 0.2  # related sentences are closer


def test_docstring_corpus_is_real_deduplicated_text() -> None:
    texts = python_docstrings(limit=200)
    assert len(texts) == 200
    assert len(set(texts)) == 200
    assert all(isinstance(t, str) and len(t) >= 20 for t in texts)
