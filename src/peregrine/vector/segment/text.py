"""Full-text matching of string payloads (Qdrant's ``text`` payload index).

A ``text`` index on a field says how its strings become tokens
(``TextIndexParams``); with one, ``match.text`` holds when the string has every
token of the query, ``match.text_any`` when it has any, and ``match.phrase``
when the query's tokens appear in it consecutively, in order. Without one,
``match.text`` and ``match.phrase`` are substring tests, as in Qdrant.

Tokens come from each *distinct* string of a segment once (``TokenIndex``,
kept beside the field's value codes), so the work grows with the distinct
texts, not with the points that repeat them.

Tokenizers: ``word`` (Unicode word characters), ``whitespace`` (split on
spaces), ``prefix`` (words, and each stored word also as its prefixes of
``min_token_len``.. letters, so a query word matches words it begins) and
``multilingual`` (here the same as ``word``: no dictionary segmentation for
CJK scripts).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from peregrine.core.errors import InvalidInputError
from peregrine.vector.types import TextIndexParams

MAX_QUERY_CHARS = 10_000


class TokenIndex:
    """Tokens of a segment field's distinct strings, by the field's value codes."""

    def __init__(self, params: TextIndexParams) -> None:
        self.params = params
        self._codes_done = 0
        self._postings: dict[str, set[int]] = {}  # token -> codes
        self._sequences: dict[int, list[str]] = {}  # code -> tokens in order (phrases)
        self._lock = threading.Lock()

    def catch_up(self, keys: Sequence[Any]) -> None:
        """Index the codes added since the last call (``keys[code]`` is a value)."""
        if len(keys) <= self._codes_done:
            return
        with self._lock:
            for code in range(self._codes_done, len(keys)):
                key = keys[code]
                if not isinstance(key, str):
                    continue
                for token in self.params.stored_tokens(key):
                    self._postings.setdefault(token, set()).add(code)
                if self.params.phrase_matching:
                    self._sequences[code] = self.params.tokens(key)
            self._codes_done = len(keys)

    def codes(self, query: str, mode: str) -> set[int]:
        """Codes whose string matches ``query``: every token ("text"), any
        ("text_any"), or all of them consecutively ("phrase")."""
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidInputError(f"a text match is at most {MAX_QUERY_CHARS} characters")
        tokens = self.params.tokens(query)
        if not tokens:
            return set()
        sets = [self._postings.get(t, set()) for t in tokens]
        if mode == "text_any":
            return set().union(*sets)
        found = set.intersection(*sorted(sets, key=len))
        if mode != "phrase":
            return found
        if not self.params.phrase_matching:
            raise InvalidInputError("match.phrase needs a text index with phrase_matching")
        n = len(tokens)
        return {code for code in found if any(
            self._sequences[code][i:i + n] == tokens
            for i in range(len(self._sequences[code]) - n + 1))}
