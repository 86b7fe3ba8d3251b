"""BM25 as sparse vectors: text in, ``(indices, values)`` out, with no model to download.

This mirrors Qdrant's server-side ``Document`` inference with the ``Qdrant/bm25``
model (fastembed's ``Bm25``), so a collection can turn text into sparse vectors
on either side: documents at upsert, queries at search.

The split of the BM25 formula follows that model. A *document* carries only the
term-frequency part, ``tf·(k+1) / (tf + k·(1 − b + b·|d|/avg_len))``; a *query*
carries 1.0 per distinct term; the IDF factor is applied by the store (a sparse
vector with ``modifier: idf``), because only the store knows the document
frequencies. The dot product then is the BM25 score.

Tokens become indices through MurmurHash3 (``abs(mmh3.hash(token))``), the same
hash fastembed uses, so an index needs no vocabulary and stays stable across
processes and versions.
"""

from __future__ import annotations

import importlib
import re
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache
from types import ModuleType

import mmh3
import numpy as np

from peregrine.core.errors import InvalidInputError
from peregrine.vector.stopwords import ENGLISH_STOPWORDS
from peregrine.vector.types import SparseVector

MAX_TEXT_CHARS = 1_000_000
"""Longest text accepted, in characters: bounds the work and memory of one call."""

_WORD_RE = re.compile(r"\w+")  # Unicode word characters; punctuation and spaces split.

_STOPWORDS: dict[str, frozenset[str]] = {"english": ENGLISH_STOPWORDS}




_EMPTY_INDICES = np.empty(0, dtype=np.uint32)
_EMPTY_VALUES = np.empty(0, dtype=np.float32)


@lru_cache(maxsize=1 << 17)
def token_index(token: str) -> int:
    """The sparse index of a token: ``abs`` of the signed 32-bit MurmurHash3 (seed 0),
    as fastembed computes it, so vectors agree with ``Qdrant/bm25``. Always fits in
    uint32 (``abs(-2**31) == 2**31``). Cached: real text repeats its words a lot."""
    return abs(mmh3.hash(token))


def _load_stemmer(language: str) -> Callable[[str], str] | None:
    """A Snowball stemmer from whichever maintained package is installed, else None.

    Imported dynamically: none is a dependency of Peregrine, and every Snowball
    implementation of one language gives the same stems (fastembed uses Snowball)."""
    candidates: list[tuple[str, Callable[[ModuleType], Callable[[str], str]]]] = [
        ("py_rust_stemmers", lambda m: m.SnowballStemmer(language).stem_word),
        ("Stemmer", lambda m: m.Stemmer(language).stemWord),
        ("snowballstemmer", lambda m: m.stemmer(language).stemWord),
    ]
    for module_name, make in candidates:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        return make(module)
    return None


class Bm25Encoder:
    """Turns texts into BM25 sparse vectors; stateless after construction, so with
    stemming off one instance may serve many threads (the token cache is thread-safe;
    some stemmer packages are not)."""

    def __init__(
        self,
        k: float = 1.2,
        b: float = 0.75,
        avg_len: float = 256.0,
        language: str | None = "english",
        stem: bool = False,
        max_token_len: int = 40,
    ) -> None:
        """``k`` saturates term frequency, ``b`` weighs document length against
        ``avg_len`` (the corpus' average token count). ``language`` picks the
        stopword list (None: keep every word). ``stem`` needs a Snowball stemmer
        package installed and is off by default, so out of the box tokens are the
        lowercased words. Tokens longer than ``max_token_len`` are dropped (hashes,
        base64 and the like are not words)."""
        if not k > 0:  # written so that NaN fails too
            raise InvalidInputError(f"bm25 k must be > 0, got {k}")
        if not 0 <= b <= 1:
            raise InvalidInputError(f"bm25 b must be within [0, 1], got {b}")
        if not 0 < avg_len < float("inf"):
            raise InvalidInputError(f"bm25 avg_len must be a finite number > 0, got {avg_len}")
        if isinstance(max_token_len, bool) or not isinstance(max_token_len, int) or (
            max_token_len < 1
        ):
            raise InvalidInputError(f"bm25 max_token_len must be an int >= 1, got {max_token_len}")
        if language is not None and language not in _STOPWORDS:
            raise InvalidInputError(
                f"bm25 language {language!r} is not supported; use one of "
                f"{sorted(_STOPWORDS)} or None"
            )
        self.k = float(k)
        self.b = float(b)
        self.avg_len = float(avg_len)
        self.language = language
        self.max_token_len = max_token_len
        self._stopwords: frozenset[str] = _STOPWORDS[language] if language else frozenset()
        self._stem: Callable[[str], str] | None = None
        if stem:
            if language is None:
                raise InvalidInputError("bm25 stemming needs a language")
            self._stem = _load_stemmer(language)
            if self._stem is None:
                raise InvalidInputError(
                    "bm25 stemming is unavailable: no Snowball stemmer package "
                    "(py_rust_stemmers, PyStemmer or snowballstemmer) is installed; "
                    "use stem=False"
                )

    def tokens(self, text: str) -> list[str]:
        """The terms of ``text``: lowercased words, stopwords and overlong tokens
        dropped, then stemmed if asked (a stem that comes back empty is dropped)."""
        _check_text(text)
        limit, stop = self.max_token_len, self._stopwords
        words = [
            w for w in (t.lower() for t in _WORD_RE.findall(text) if len(t) <= limit)
            if w not in stop
        ]
        if self._stem is not None:
            stem = self._stem
            words = [s for s in map(stem, words) if s]
        return words

    def encode_documents(self, texts: Sequence[str]) -> list[SparseVector]:
        """One document vector per text (the BM25 term-frequency part per term)."""
        return [self._document(text) for text in _check_batch(texts)]

    def encode_queries(self, texts: Sequence[str]) -> list[SparseVector]:
        """One query vector per text: 1.0 for each distinct term (IDF is the store's)."""
        return [self._query(text) for text in _check_batch(texts)]

    def _document(self, text: str) -> SparseVector:
        words = self.tokens(text)
        if not words:
            return SparseVector(_EMPTY_INDICES, _EMPTY_VALUES)
        counts = Counter(words)
        ids = np.fromiter(map(token_index, counts), dtype=np.uint32, count=len(counts))
        tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        norm = self.k * (1.0 - self.b + self.b * len(words) / self.avg_len)
        weights = tf * (self.k + 1.0) / (tf + norm)
        # Sorted unique indices; terms that collide on one index add up, as they
        # would have had they been one term in the dot product.
        indices, inverse = np.unique(ids, return_inverse=True)
        values = np.bincount(inverse, weights=weights, minlength=indices.shape[0])
        return SparseVector(indices.astype(np.uint32), values.astype(np.float32))

    def _query(self, text: str) -> SparseVector:
        words = set(self.tokens(text))
        if not words:
            return SparseVector(_EMPTY_INDICES, _EMPTY_VALUES)
        ids = np.fromiter(map(token_index, words), dtype=np.uint32, count=len(words))
        indices = np.unique(ids)  # a collision keeps its index once
        return SparseVector(indices, np.ones(indices.shape[0], dtype=np.float32))


def _check_text(text: object) -> None:
    if not isinstance(text, str):
        raise InvalidInputError(f"bm25 input must be a str, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidInputError(
            f"bm25 input is {len(text)} characters, more than the limit of {MAX_TEXT_CHARS}"
        )


def _check_batch(texts: Sequence[str]) -> Sequence[str]:
    """Refuses a bare str (it would be read as one text per character) and checks
    every text before any is encoded, so a bad batch fails without partial work."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InvalidInputError(
            f"bm25 expects a sequence of str, got {type(texts).__name__}"
        )
    for i, text in enumerate(texts):
        try:
            _check_text(text)
        except InvalidInputError as exc:
            raise InvalidInputError(f"text {i}: {exc}") from None
    return texts
