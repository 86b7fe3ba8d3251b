"""Formula expressions evaluated against plain-Python arithmetic."""

from __future__ import annotations

import math
from typing import Any

import pytest

from peregrine.core.errors import InvalidInputError
from peregrine.vector.formula import FormulaQuery, Inputs, evaluate

IDS = [1, 2, 3]
PAYLOADS: list[dict[str, Any] | None] = [
    {"x": 4.0, "when": "2024-01-01T00:00:00Z", "tags": ["a"]},
    {"x": [9, 1], "when": "2024-01-02T00:00:00Z"},
    None,
]
SCORES = [{1: 0.5, 2: 0.25, 3: 1.0}, {1: 2.0}]


def run(formula: Any, defaults: dict[str, Any] | None = None) -> list[float]:
    inputs = Inputs(IDS, SCORES, lambda: PAYLOADS,
                    lambda cond: {1} if cond.get("key") == "tags" else set())
    return evaluate(FormulaQuery(formula, defaults or {}), inputs).tolist()


def test_operations() -> None:
    d = {"x": 16.0}
    assert run({"sum": ["$score", "$score[1]"]}) == [2.5, 0.25, 1.0]
    assert run({"sum": ["$score[1]"]}, {"$score[1]": -1}) == [2.0, -1.0, -1.0]
    assert run({"mult": ["x", 2]}, d) == [8.0, 18.0, 32.0]  # first number of an array
    assert run({"pow": {"base": "x", "exponent": 0.5}}, d) == [2.0, 3.0, 4.0]
    assert run({"sqrt": "x"}, d) == [2.0, 3.0, 4.0]
    assert run({"neg": {"abs": -3}}) == [-3.0] * 3
    assert run({"div": {"left": 1, "right": {"sum": ["$score[1]", 0]},
                        "by_zero_default": 7}}) == [0.5, 7.0, 7.0]
    assert run({"log10": 100}) == [2.0] * 3
    assert run({"ln": {"exp": 2}}) == pytest.approx([2.0] * 3)
    assert run({"key": "tags", "match": {"value": "a"}}) == [1.0, 0.0, 0.0]
    day = run({"datetime_key": "when"}, {"when": "2024-01-03T00:00:00Z"})
    assert day[1] - day[0] == 86_400 and day[2] - day[0] == 2 * 86_400
    assert run({"datetime": "1970-01-02T00:00:00Z"}) == [86_400.0] * 3


def test_decays_match_qdrants_definitions() -> None:
    x = {"x": 4.0}
    params = {"x": "$score", "target": 0.0, "scale": 0.5, "midpoint": 0.25}
    s = [0.5, 0.25, 1.0]
    assert run({"lin_decay": params}, x) == pytest.approx(
        [max(0.0, 1 - 0.75 * v / 0.5) for v in s])
    assert run({"exp_decay": params}, x) == pytest.approx(
        [math.exp(math.log(0.25) * v / 0.5) for v in s])
    assert run({"gauss_decay": params}, x) == pytest.approx(
        [math.exp(math.log(0.25) * (v / 0.5) ** 2) for v in s])


@pytest.mark.parametrize("formula", [
    {"unknown": 1}, {"sum": []}, {"sum": 1}, "$other", float("inf"), True, None,
    {"pow": {"base": 1}}, {"div": {"left": 1, "right": 2, "extra": 3}},
    {"exp_decay": {"x": 1, "scale": 0}}, {"exp_decay": {"x": 1, "midpoint": 1.5}},
    {"geo_distance": {"origin": {"lat": "a", "lon": 1}, "to": "at"}},
    {"datetime": "not a date"}, {"sum": [1] * 300},
    {"div": {"left": 1, "right": 0, "by_zero_default": "x"}},
    {"div": {"left": 1, "right": 0, "by_zero_default": None}},
])
def test_malformed_formulas_are_refused(formula: Any) -> None:
    with pytest.raises(InvalidInputError):
        FormulaQuery(formula, {})


@pytest.mark.parametrize("defaults", [{"$score": "abc"}, {"at": {"lat": "x", "lon": 1}},
                                      {"at": {}}, {"x": [1]}, {"x": None}])
def test_malformed_defaults_are_refused(defaults: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        FormulaQuery("$score", defaults)


@pytest.mark.parametrize(("formula", "match"), [
    ("x", "defaults give none"),
    ({"sqrt": -1}, "not a finite number"),
    ({"div": {"left": 1, "right": 0}}, "not a finite number"),
    ("$score[5]", "names prefetch 5"),
])
def test_evaluation_errors_are_clear(formula: Any, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        run(formula)
