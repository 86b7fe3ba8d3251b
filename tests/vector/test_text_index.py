"""The full-text payload index: tokenizers, match.text / text_any / phrase against
a plain-Python oracle, over sealed and mutable segments, kept across reopen."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from peregrine.core.errors import InvalidInputError
from peregrine.vector.collection.database import open_database
from peregrine.vector.types import TextIndexParams

TEXTS = [
    "The Quick brown fox jumps over the lazy dog",
    "A quick brown dog",
    "brown foxes are quick",
    "Lazy afternoons, quick naps!",
    "the fox",
    "nothing to see here",
    "quickly browning toast",
]


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def test_tokenizers() -> None:
    assert TextIndexParams().tokens("Hello, World! x") == ["hello", "world", "x"]
    assert TextIndexParams(tokenizer="whitespace", lowercase=False).tokens("a-b C") == [
        "a-b", "C"]
    assert TextIndexParams(min_token_len=2, max_token_len=4).tokens("a bb cccc ddddd") == [
        "bb", "cccc"]
    assert TextIndexParams(stopwords=("english", "fox")).tokens("the quick fox") == ["quick"]
    assert TextIndexParams(tokenizer="prefix", min_token_len=2).stored_tokens("brown") == [
        "br", "bro", "brow", "brown"]
    long = "x" * 500  # prefixes stop at 20 letters; the whole token still matches
    stored = TextIndexParams(tokenizer="prefix").stored_tokens(long)
    assert len(stored) == 21 and stored[-1] == long
    with pytest.raises(InvalidInputError):
        TextIndexParams(tokenizer="ngram")
    with pytest.raises(InvalidInputError):
        TextIndexParams.from_dict({"type": "text", "stemmer": {"language": "english"}})


def _db_with_texts(path: Path, params: dict[str, Any]) -> Any:
    db = open_database(path)
    c = db.create_collection("c", 2, "dot", {"segment_rows": 16})
    n = len(TEXTS) * 5
    c.upsert(list(range(n)), np.ones((n, 2)), [{"t": TEXTS[i % len(TEXTS)]} for i in range(n)])
    c.optimize()
    c.upsert([1000, 1001], np.ones((2, 2)), [{"t": ["quick brown fox", "other"]},
                                               {"t": 7}])  # an array, and not a string
    c.create_payload_index("t", "text", params)
    return db, c


@pytest.mark.parametrize("query", ["quick brown", "fox", "QUICK", "lazy dog", "zebra", ""])
def test_text_and_text_any_match_the_oracle(tmp_path: Path, query: str) -> None:
    db, c = _db_with_texts(tmp_path / "db", {"type": "text", "tokenizer": "word"})
    try:
        q = set(_words(query))
        stored = {pid: r.payload["t"] for pid, r in (
            (r.id, r) for r in c.scroll(limit=1000)[0])}

        def words_of(value: Any) -> list[set[str]]:
            values = value if isinstance(value, list) else [value]
            return [set(_words(v)) for v in values if isinstance(v, str)]

        want_all = {p for p, v in stored.items() if q and any(q <= w for w in words_of(v))}
        want_any = {p for p, v in stored.items() if any(q & w for w in words_of(v))}
        got_all = set(c.ids_matching({"must": [{"key": "t", "match": {"text": query}}]}))
        got_any = set(c.ids_matching({"must": [{"key": "t", "match": {"text_any": query}}]}))
        assert got_all == want_all
        assert got_any == want_any
    finally:
        db.close()


def test_phrase_prefix_and_reopen(tmp_path: Path) -> None:
    db, c = _db_with_texts(tmp_path / "db", {"type": "text", "tokenizer": "prefix",
                                             "min_token_len": 3, "phrase_matching": True,
                                             "stopwords": {"languages": ["english"]}})
    try:
        def ids(flt: dict[str, Any]) -> set[int]:
            return set(c.ids_matching({"must": [{"key": "t", "match": flt}]}))

        every = set(range(len(TEXTS) * 5))
        by_text = {t: {i for i in every if TEXTS[i % len(TEXTS)] == t} for t in TEXTS}
        # prefix: "quic" matches quick and quickly
        assert ids({"text": "quic"}) == (by_text[TEXTS[0]] | by_text[TEXTS[1]] | by_text[
            TEXTS[2]] | by_text[TEXTS[3]] | by_text[TEXTS[6]] | {1000})
        # phrase: consecutive tokens, stopwords dropped from both sides
        assert ids({"phrase": "brown fox"}) == by_text[TEXTS[0]] | {1000}
        assert ids({"phrase": "fox brown"}) == set()
        with pytest.raises(InvalidInputError, match="characters"):
            ids({"phrase": "x" * 20_000})
    finally:
        db.close()
    db = open_database(tmp_path / "db")
    try:
        c = db.collection("c")
        assert c.config.text_indexes["t"].tokenizer == "prefix"
        assert set(c.ids_matching({"must": [{"key": "t", "match": {"phrase": "brown fox"}}]}
                                  )) == {i for i in range(len(TEXTS) * 5) if i % len(TEXTS) == 0
                                         } | {1000}
    finally:
        db.close()


def test_without_a_text_index_text_is_a_substring_and_text_any_is_refused(
        tmp_path: Path) -> None:
    db = open_database(tmp_path / "db")
    try:
        c = db.create_collection("c", 2, "dot")
        c.upsert([1, 2], np.ones((2, 2)), [{"t": "quickly"}, {"t": "quick"}])
        assert set(c.ids_matching({"must": [{"key": "t", "match": {"text": "quick"}}]})) == {
            1, 2}
        with pytest.raises(InvalidInputError, match="text_any needs a text index"):
            c.count({"must": [{"key": "t", "match": {"text_any": "quick"}}]})
        with pytest.raises(InvalidInputError, match="phrase_matching"):
            c.create_payload_index("t", "text", {"type": "text"})
            c.count({"must": [{"key": "t", "match": {"phrase": "quick"}}]})
    finally:
        db.close()
