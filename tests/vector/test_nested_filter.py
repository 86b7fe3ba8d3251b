"""Nested filters: the conditions of one nested filter must hold for the same
array element, against a plain-Python oracle, over sealed and mutable segments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from peregrine.core.errors import InvalidInputError
from peregrine.vector.collection.database import open_database

FOODS = ["meat", "vegetables", "fish", "fruit"]


def _payloads(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        diet = [{"food": FOODS[int(rng.integers(4))], "likes": bool(rng.integers(2)),
                 "grams": int(rng.integers(0, 500))} for _ in range(int(rng.integers(0, 4)))]
        if i % 7 == 0:
            diet.append("not an object")
        out.append({"diet": diet, "name": f"p{i}",
                    "meals": [{"courses": [{"food": FOODS[int(rng.integers(4))]}]}]})
    return out


def test_nested_conditions_hold_on_one_element(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    payloads = _payloads(rng, 300)
    db = open_database(tmp_path / "db")
    try:
        c = db.create_collection("c", 2, "dot", {"segment_rows": 64})
        c.upsert(list(range(200)), np.ones((200, 2)), payloads[:200])
        c.optimize()
        c.upsert(list(range(200, 300)), np.ones((100, 2)), payloads[200:])
        for food in FOODS:
            for likes in (True, False):
                flt = {"must": [{"nested": {"key": "diet", "filter": {"must": [
                    {"key": "food", "match": {"value": food}},
                    {"key": "likes", "match": {"value": likes}},
                    {"key": "grams", "range": {"gte": 100}}]}}}]}
                want = {i for i, p in enumerate(payloads) if any(
                    isinstance(e, dict) and e["food"] == food and e["likes"] is likes
                    and e["grams"] >= 100 for e in p["diet"])}
                assert set(c.ids_matching(flt)) == want
                # The same conditions on "diet[]" paths may be met by different elements.
                loose = {"must": [{"key": "diet[].food", "match": {"value": food}},
                                  {"key": "diet[].likes", "match": {"value": likes}}]}
                assert want <= set(c.ids_matching(loose))
        not_nested = {"must_not": [{"nested": {"key": "diet", "filter": {"must": [
            {"key": "food", "match": {"value": "meat"}}]}}}]}
        want = {i for i, p in enumerate(payloads) if not any(
            isinstance(e, dict) and e["food"] == "meat" for e in p["diet"])}
        assert set(c.ids_matching(not_nested)) == want
        deep = {"must": [{"nested": {"key": "meals", "filter": {"must": [{"nested": {
            "key": "courses", "filter": {"must": [{"key": "food",
                                                    "match": {"value": "fish"}}]}}}]}}}]}
        want = {i for i, p in enumerate(payloads) if p["meals"][0]["courses"][0]["food"] ==
                "fish"}
        assert set(c.ids_matching(deep)) == want
        for bad in ({"nested": {"key": "diet"}},
                    {"nested": {"key": "diet", "filter": {"must": [{"has_id": [1]}]}}},
                    {"nested": {"key": "", "filter": {}}}):
            with pytest.raises(InvalidInputError):
                c.count({"must": [bad]})
    finally:
        db.close()
