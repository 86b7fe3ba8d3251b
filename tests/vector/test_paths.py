"""Payload paths as Qdrant reads them: parsing, filter values and selectors."""

from __future__ import annotations

from typing import Any

import pytest

from peregrine.core.errors import InvalidInputError
from peregrine.vector.paths import ALL, parse_path, select, values_at

P = {"country": {"name": "DE", "capital": "Berlin",
                 "cities": [{"name": "a", "pop": 1}, {"name": "b", "pop": 2}]},
     "tags": ["x", "y"], "a.b": 5, "x": 1}


@pytest.mark.parametrize(("text", "steps"), [
    ("a", ("a",)),
    ("a.b.c", ("a", "b", "c")),
    ("a[]", ("a", ALL)),
    ("a[].b[2].c", ("a", ALL, "b", 2, "c")),
    ('"a.b"', ("a.b",)),
    ('x."a b".c', ("x", "a b", "c")),
    ("ключ.é-1_2", ("ключ", "é-1_2")),
])
def test_paths_parse(text: str, steps: tuple[Any, ...]) -> None:
    assert parse_path(text) == steps


@pytest.mark.parametrize("text", ["", ".a", "a.", "a..b", "[]", "a[x]", "a b", 'a."b', "a[]b",
                                  "a.[0]"])
def test_malformed_paths_are_refused(text: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_path(text)


def test_values_follow_arrays_only_where_the_path_says() -> None:
    assert values_at(P, parse_path("country.cities.pop")) == []
    assert values_at(P, parse_path("country.cities[].pop")) == [1, 2]
    assert values_at(P, parse_path("country.cities[1].pop")) == [2]
    assert values_at(P, parse_path("country.cities[5].pop")) == []
    assert values_at(P, parse_path("tags")) == ["x", "y"]  # a terminal array fans out
    assert values_at(P, parse_path('"a.b"')) == [5]


def test_selectors_keep_ancestors_and_subtrees() -> None:
    assert select(P, include=["country.name"]) == {"country": {"name": "DE"}}
    assert select(P, include=["country.cities[].pop"]) == {
        "country": {"cities": [{"pop": 1}, {"pop": 2}]}}
    assert select(P, include=["country.cities[0].pop"]) == {"country": {"cities": []}}
    assert select(P, include=["x", "tags"]) == {"tags": ["x", "y"], "x": 1}
    assert select(P, include=["x.y"]) == {"x": 1}  # a leaf on the way is kept whole
    assert select(P, exclude=["country.cities[].name", "tags", "a.b"]) == {
        "country": {"name": "DE", "capital": "Berlin", "cities": [{"pop": 1}, {"pop": 2}]},
        "a.b": 5, "x": 1}
    assert select(P, exclude=["country.cities.name"]) == P  # no [] : nothing removed
