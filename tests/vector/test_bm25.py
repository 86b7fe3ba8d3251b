"""The BM25 sparse encoder: tokenizer, the document/query split of the formula,
hash collisions, limits, and ranking agreement with a maintained BM25 library."""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest

from peregrine.core.errors import InvalidInputError
from peregrine.vector import bm25
from peregrine.vector.bm25 import MAX_TEXT_CHARS, Bm25Encoder, SparseVector, token_index


def as_dict(vec: SparseVector) -> dict[int, float]:
    return {int(i): float(v) for i, v in zip(vec.indices, vec.values, strict=True)}


def assert_well_formed(vec: SparseVector) -> None:
    assert vec.indices.dtype == np.uint32
    assert vec.values.dtype == np.float32
    assert vec.indices.shape == vec.values.shape
    assert np.all(np.diff(vec.indices.astype(np.int64)) > 0)  # sorted ascending, unique


# --- tokenizer -------------------------------------------------------------------------


def test_tokens_lowercase_split_on_punctuation_and_drop_stopwords() -> None:
    text = "Hello, WORLD! It's the fox's den... (really)"
    assert Bm25Encoder().tokens(text) == ["hello", "world", "fox", "den", "really"]
    assert Bm25Encoder(language=None).tokens(text) == [
        "hello", "world", "it", "s", "the", "fox", "s", "den", "really",
    ]


def test_tokens_keep_unicode_words_digits_and_underscores() -> None:
    enc = Bm25Encoder(language=None)
    assert enc.tokens("Café NAÏVE Straße — covid19 snake_case 3.14") == [
        "café", "naïve", "straße", "covid19", "snake_case", "3", "14",
    ]


def test_tokens_drop_overlong_tokens() -> None:
    enc = Bm25Encoder(language=None, max_token_len=5)
    assert enc.tokens("short toolong fiver") == ["short", "fiver"]
    assert Bm25Encoder().tokens("a" * 40 + " " + "b" * 41) == ["a" * 40]


def test_stopword_list_is_the_common_english_one() -> None:
    assert 120 <= len(bm25.ENGLISH_STOPWORDS) <= 180
    assert {"the", "and", "of", "is", "not", "don", "t"} <= bm25.ENGLISH_STOPWORDS
    assert all(w == w.lower() and w.isalpha() for w in bm25.ENGLISH_STOPWORDS)


# --- the formula ------------------------------------------------------------------------


def test_token_index_is_fastembeds_abs_murmur3() -> None:
    # mmh3.hash("foo") == -156908512 (the value mmh3 documents); fastembed takes abs().
    assert token_index("foo") == 156908512
    assert token_index("foo") == token_index("foo") < 2**32


def test_document_values_against_hand_computed_bm25() -> None:
    vec = Bm25Encoder(language=None).encode_documents(["Apple apple, banana."])[0]
    assert_well_formed(vec)
    # |d| = 3, avg_len = 256: norm = 1.2 * (0.25 + 0.75 * 3/256) = 0.310546875
    # apple (tf 2): 2 * 2.2 / (2 + 0.310546875) = 1.9043110735...
    # banana (tf 1): 1 * 2.2 / (1 + 0.310546875) = 1.6786885245...
    assert as_dict(vec) == {
        token_index("apple"): pytest.approx(1.9043110735, rel=1e-6),
        token_index("banana"): pytest.approx(1.6786885245, rel=1e-6),
    }


@pytest.mark.parametrize(("b", "avg_len"), [(0.0, 256.0), (1.0, 4.0)])
def test_document_values_without_length_normalisation(b: float, avg_len: float) -> None:
    # b = 0, or |d| == avg_len: the weight is tf * (k+1) / (tf + k); k = 2 -> 6/4 and 3/3.
    vec = Bm25Encoder(k=2.0, b=b, avg_len=avg_len, language=None).encode_documents(
        ["x x y z"]
    )[0]
    assert as_dict(vec) == {
        token_index("x"): pytest.approx(1.5),
        token_index("y"): pytest.approx(1.0),
        token_index("z"): pytest.approx(1.0),
    }


def test_stopwords_do_not_count_toward_document_length() -> None:
    enc = Bm25Encoder(b=1.0, avg_len=1.0)
    assert as_dict(enc.encode_documents(["the cat"])[0]) == as_dict(
        enc.encode_documents(["cat"])[0]
    )


def test_query_values_are_one_per_distinct_token() -> None:
    vec = Bm25Encoder().encode_queries(["Cats and dogs, dogs and CATS; mice"])[0]
    assert_well_formed(vec)
    assert as_dict(vec) == {token_index(t): 1.0 for t in ("cats", "dogs", "mice")}


def test_indices_are_sorted_and_unique_on_longer_text() -> None:
    rng = random.Random(3)
    words = [f"w{i}" for i in range(300)]
    text = " ".join(rng.choice(words) for _ in range(5000))
    enc = Bm25Encoder(language=None)
    doc, query = enc.encode_documents([text])[0], enc.encode_queries([text])[0]
    for vec in (doc, query):
        assert_well_formed(vec)
        assert vec.indices.size == len(set(text.split()))
    assert np.array_equal(doc.indices, query.indices)


def test_colliding_tokens_are_summed_in_documents_and_kept_once_in_queries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = {"apple": 7, "banana": 7, "cherry": 3}
    monkeypatch.setattr(bm25, "token_index", fake.__getitem__)
    enc = Bm25Encoder(language=None)
    doc = enc.encode_documents(["apple banana cherry cherry"])[0]
    assert_well_formed(doc)
    norm = 1.2 * (0.25 + 0.75 * 4 / 256)
    one, two = 2.2 / (1 + norm), 2 * 2.2 / (2 + norm)
    assert doc.indices.tolist() == [3, 7]
    assert doc.values.tolist() == pytest.approx([two, 2 * one], rel=1e-6)
    query = enc.encode_queries(["banana apple cherry"])[0]
    assert query.indices.tolist() == [3, 7]
    assert query.values.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("text", ["", "   \n\t", "!!! ... ---", "the a an of"])
def test_text_without_terms_gives_an_empty_vector(text: str) -> None:
    enc = Bm25Encoder()
    for vec in (enc.encode_documents([text])[0], enc.encode_queries([text])[0]):
        assert vec.indices.size == 0
        assert_well_formed(vec)


# --- limits and bad input ----------------------------------------------------------------


def test_text_longer_than_the_cap_is_refused() -> None:
    enc = Bm25Encoder()
    with pytest.raises(InvalidInputError, match="limit"):
        enc.encode_documents(["x" * (MAX_TEXT_CHARS + 1)])
    with pytest.raises(InvalidInputError, match="limit"):
        enc.encode_queries(["x" * (MAX_TEXT_CHARS + 1)])


def test_text_at_the_cap_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bm25, "MAX_TEXT_CHARS", 9)
    enc = Bm25Encoder()
    assert enc.encode_documents(["abcd efgh"])[0].indices.size == 2
    with pytest.raises(InvalidInputError):
        enc.tokens("abcd efghi")


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["nested"]])
def test_non_str_text_is_refused(bad: object) -> None:
    enc = Bm25Encoder()
    with pytest.raises(InvalidInputError, match="text 1"):
        enc.encode_documents(["fine", bad])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError):
        enc.encode_queries([bad])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError):
        enc.tokens(bad)  # type: ignore[arg-type]


def test_a_bare_string_is_not_a_batch() -> None:
    with pytest.raises(InvalidInputError, match="sequence of str"):
        Bm25Encoder().encode_documents("one text")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"k": 0.0}, {"k": -1.0}, {"k": math.nan}, {"b": -0.1}, {"b": 1.1}, {"b": math.nan},
        {"avg_len": 0.0}, {"avg_len": math.inf}, {"avg_len": math.nan},
        {"max_token_len": 0}, {"max_token_len": True}, {"language": "klingon"},
        {"language": None, "stem": True},
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        Bm25Encoder(**kwargs)  # type: ignore[arg-type]


def test_stemming_without_a_stemmer_package_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bm25, "_load_stemmer", lambda language: None)
    with pytest.raises(InvalidInputError, match="stemming is unavailable"):
        Bm25Encoder(stem=True)


def test_stemmer_runs_after_stopwords_and_empty_stems_are_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def stem(word: str) -> str:
        return "" if word == "zap" else word.removesuffix("s")

    monkeypatch.setattr(bm25, "_load_stemmer", lambda language: stem)
    assert Bm25Encoder(stem=True).tokens("The cats zap this dogs") == ["cat", "dog"]


# --- ranking agrees with a maintained BM25 implementation ------------------------------


def test_ranking_matches_bm25s_lucene() -> None:
    bm25s = pytest.importorskip("bm25s")
    rng = random.Random(20240611)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = sorted({"".join(rng.choices(letters, k=rng.randint(3, 9))) for _ in range(120)})
    weights = [1.0 / (rank + 1) for rank in range(len(vocab))]  # Zipf-like: tf > 1 occurs

    def sentence(n: int) -> str:
        words = rng.choices(vocab, weights=weights, k=n)
        return words[0].capitalize() + " " + ", ".join(words[1:]) + "."

    corpus = [sentence(rng.randint(3, 40)) for _ in range(200)]
    queries = [sentence(rng.randint(1, 5)) for _ in range(30)]

    tokenizer = Bm25Encoder(language=None)
    corpus_tokens = [tokenizer.tokens(text) for text in corpus]
    avg_len = sum(map(len, corpus_tokens)) / len(corpus_tokens)
    assert len({token_index(w) for w in vocab}) == len(vocab)  # no collision to muddle this
    k, b = 1.2, 0.75
    enc = Bm25Encoder(k=k, b=b, avg_len=avg_len, language=None)

    docs = [as_dict(v) for v in enc.encode_documents(corpus)]
    df = Counter(i for doc in docs for i in doc)
    n = len(docs)

    def idf(i: int) -> float:
        return math.log((n - df[i] + 0.5) / (df[i] + 0.5) + 1)

    retriever = bm25s.BM25(k1=k, b=b, method="lucene")
    retriever.index(corpus_tokens, show_progress=False)
    indexed = set(retriever.vocab_dict)

    for query, qvec in zip(queries, enc.encode_queries(queries), strict=True):
        q = as_dict(qvec)
        ours = np.array(
            [sum(idf(i) * doc[i] * q[i] for i in q.keys() & doc.keys()) for doc in docs]
        )
        # bm25s takes each query term once per occurrence; our query vector has it once.
        terms = sorted(set(tokenizer.tokens(query)) & indexed)
        # Lucene's BM25 drops the constant (k+1) of the term-frequency part; Qdrant/bm25
        # keeps it. A constant factor, so the ranking is the same.
        theirs = retriever.get_scores(terms).astype(np.float64) * (k + 1)
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
        top_ours = np.argsort(-ours, kind="stable")[:10]
        top_theirs = np.argsort(-theirs, kind="stable")[:10]
        assert top_ours.tolist() == top_theirs.tolist(), query
        assert ours[top_ours[0]] > 0
