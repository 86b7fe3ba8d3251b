"""The ONNX Runtime backend against the sentence-transformers reference (real model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("sentence_transformers")

from peregrine.embed import model_path
from peregrine.embed.embedder import TextEmbedder
from peregrine.embed.onnx_backend import OnnxEncoder

LONG = " ".join(
    f"Sentence {i} describes how the write-ahead log replays segment {i * 7} after a crash."
    for i in range(60)
)  # ~1000 tokens: checks truncation at 256
TEXTS = [
    "",
    "x",
    "open a network socket",
    "Return the number of items in the container.",
    "Ünïcödé: café, naïve, Straße — 東京は日本の首都です 🚀",
    "See issue #29220 for more information: https://example.org/a?b=c",
    "   leading and trailing whitespace   ",
    LONG,
    LONG[:700],
    "def add(a, b):\n    return a + b\n",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return TextEmbedder(backend="torch").encode(TEXTS)


@pytest.fixture(scope="module")
def int8(cache: Path) -> TextEmbedder:
    return TextEmbedder(cache_dir=cache)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1))


def test_default_backend_is_onnx_int8(int8: TextEmbedder) -> None:
    assert int8.backend == "onnx" and int8.dim == 384 and int8.max_seq_length == 256


def test_int8_matches_reference_per_text(int8: TextEmbedder, reference: np.ndarray) -> None:
    vecs = int8.encode(TEXTS)
    assert vecs.shape == (len(TEXTS), 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert _cos(vecs, reference).min() >= 0.99


def test_fp32_matches_reference_closely(cache: Path, reference: np.ndarray) -> None:
    vecs = TextEmbedder(int8=False, cache_dir=cache).encode(TEXTS)
    assert _cos(vecs, reference).min() >= 0.9999


def test_truncates_at_256_tokens_like_the_reference(int8: TextEmbedder) -> None:
    longer = int8.encode([LONG, LONG + " and then some more words at the end"])
    assert _cos(longer[:1], longer[1:])[0] > 0.9999  # the tail past 256 tokens is ignored


def test_batch_equals_one_by_one(cache: Path, int8: TextEmbedder) -> None:
    fp32 = TextEmbedder(int8=False, cache_dir=cache)
    single = np.vstack([fp32.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(fp32.encode(TEXTS), single, atol=2e-5)
    # int8 activations are quantized with one scale per batch tensor (padding
    # rows included), so a batch differs from single runs by rounding: measured
    # min cosine 0.9935 here, each side still >= 0.99 to the reference.
    single8 = np.vstack([int8.encode([t]) for t in TEXTS])
    assert _cos(int8.encode(TEXTS, batch_size=8), single8).min() >= 0.99


def test_cache_is_reused(cache: Path, int8: TextEmbedder) -> None:
    again = OnnxEncoder(model_path(), cache=cache)
    assert again.exported is False and again.path == int8._onnx.path  # type: ignore[union-attr]


def test_corrupt_cache_is_rebuilt(tmp_path: Path, reference: np.ndarray) -> None:
    first = OnnxEncoder(model_path(), cache=tmp_path)
    assert first.exported
    first.path.write_bytes(b"not an onnx model")
    rebuilt = OnnxEncoder(model_path(), cache=tmp_path)
    assert rebuilt.exported and rebuilt.path == first.path
    assert _cos(rebuilt.encode(TEXTS), reference).min() >= 0.99
    assert not list(tmp_path.glob("*.tmp"))


def test_torch_backend_still_available(reference: np.ndarray) -> None:
    assert reference.shape == (len(TEXTS), 384)
    with pytest.raises(ValueError):
        TextEmbedder(backend="tpu")
