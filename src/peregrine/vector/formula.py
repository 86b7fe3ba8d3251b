"""Formula rescoring (Qdrant's ``{"formula": ..., "defaults": ...}`` query).

The points that a query's prefetches found are re-scored by an expression of
their prefetch scores, payload values and filter conditions, then ranked by it
(highest first). Expressions:

- a number; ``"$score"`` (the first prefetch's score) or ``"$score[i]"``;
  any other string names a payload value (its first number; a datetime string
  counts in seconds since the epoch);
- a filter condition object (``{"key": ..., "match": ...}``, ``has_id``, a
  nested filter...): 1 where it holds, else 0;
- ``sum``, ``mult`` (lists), ``neg``, ``abs``, ``sqrt``, ``exp``, ``log10``,
  ``ln``, ``pow`` (``base``, ``exponent``), ``div`` (``left``, ``right``,
  ``by_zero_default``);
- ``exp_decay``, ``gauss_decay``, ``lin_decay`` (``x``, ``target`` 0,
  ``scale`` 1, ``midpoint`` 0.5) as Qdrant defines them;
- ``geo_distance`` (``origin`` {lat, lon}, ``to`` a payload key: metres);
- ``datetime`` (a constant) and ``datetime_key`` (a payload key): seconds.

A value a point lacks comes from ``defaults`` (by key, or ``"$score[i]"``);
a prefetch score a point lacks is 0 unless a default says otherwise; a payload
value a point lacks with no default is an error, as in Qdrant, and so is a
result that is not a finite number. Everything is evaluated with numpy over
all candidates at once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from peregrine.core.errors import InvalidInputError
from peregrine.vector.paths import parse_path, values_at
from peregrine.vector.segment.geo import EARTH_RADIUS_M
from peregrine.vector.segment.payload_index import parse_datetime

F64 = npt.NDArray[np.float64]
MAX_NODES = 256
_SCORE = re.compile(r"^\$score(?:\[(\d+)\])?$")
_UNARY = {"neg": np.negative, "abs": np.abs, "sqrt": np.sqrt, "exp": np.exp,
          "log10": np.log10, "ln": np.log}
_DECAYS = ("exp_decay", "gauss_decay", "lin_decay")


@dataclass(frozen=True, slots=True)
class FormulaQuery:
    """Re-score the prefetched points by ``formula`` (see the module docstring)."""

    formula: Any
    defaults: dict[str, Any]

    def __post_init__(self) -> None:
        check(self.formula)
        if not isinstance(self.defaults, dict):
            raise InvalidInputError("formula defaults are an object")
        if len(self.defaults) > MAX_NODES:
            raise InvalidInputError(f"formula defaults: at most {MAX_NODES} entries")
        for key, value in self.defaults.items():
            geo = isinstance(value, dict) and set(value) == {"lat", "lon"} and _number(
                value["lat"]) and _number(value["lon"])
            if key.startswith("$") and not _number(value):
                raise InvalidInputError(f"formula defaults: {key!r} must be a number")
            if not (_number(value) or geo or (isinstance(value, str) and not math.isnan(
                    parse_datetime(value)))):
                raise InvalidInputError(f"formula defaults: {key!r} must be a number, a "
                                        "datetime or a {lat, lon} point")


@dataclass(frozen=True, slots=True)
class Inputs:
    """What a formula reads, for the candidate points (in one order)."""

    ids: list[Any]
    scores: list[dict[Any, float]]  # per prefetch: id -> score
    payloads: Callable[[], list[dict[str, Any] | None]]  # fetched once, when needed
    matches: Callable[[dict[str, Any]], set[Any]]  # a condition -> the ids it admits


def check(formula: Any) -> None:
    """Refuse a malformed or oversized formula before anything is read."""
    count = 0

    def walk(node: Any, depth: int) -> None:
        nonlocal count
        count += 1
        if count > MAX_NODES or depth > 32:
            raise InvalidInputError(f"a formula has at most {MAX_NODES} parts, 32 deep")
        if isinstance(node, bool) or node is None:
            raise InvalidInputError(f"formula: {node!r} is not an expression")
        if isinstance(node, (int, float)):
            if not math.isfinite(node):
                raise InvalidInputError("formula: constants must be finite")
            return
        if isinstance(node, str):
            if node.startswith("$") and not _SCORE.match(node):
                raise InvalidInputError(f"formula: unknown variable {node!r}")
            if not node.startswith("$"):
                parse_path(node)
            return
        if not isinstance(node, dict) or (len(node) != 1 and "key" not in node):
            raise InvalidInputError("formula: an expression is a number, a string, a "
                                    "condition or one operation")
        ((op, arg),) = node.items() if len(node) == 1 else (("condition", node),)
        if op in ("sum", "mult"):
            if not isinstance(arg, list) or not arg:
                raise InvalidInputError(f"formula: {op} takes a non-empty list")
            for item in arg:
                walk(item, depth + 1)
        elif op in _UNARY:
            walk(arg, depth + 1)
        elif op == "pow":
            _fields(arg, op, {"base", "exponent"}, set())
            walk(arg["base"], depth + 1)
            walk(arg["exponent"], depth + 1)
        elif op == "div":
            _fields(arg, op, {"left", "right"}, {"by_zero_default"})
            if "by_zero_default" in arg and not _number(arg["by_zero_default"]):
                raise InvalidInputError("formula: div.by_zero_default must be a number")
            walk(arg["left"], depth + 1)
            walk(arg["right"], depth + 1)
        elif op in _DECAYS:
            _fields(arg, op, {"x"}, {"target", "scale", "midpoint"})
            for part in ("x", "target"):
                if part in arg:
                    walk(arg[part], depth + 1)
            scale, midpoint = arg.get("scale", 1.0), arg.get("midpoint", 0.5)
            if not _number(scale) or scale <= 0:
                raise InvalidInputError(f"formula: {op}.scale must be a positive number")
            if not _number(midpoint) or not 0 < midpoint < 1:
                raise InvalidInputError(f"formula: {op}.midpoint must be in (0, 1)")
        elif op == "geo_distance":
            _fields(arg, op, {"origin", "to"}, set())
            origin = arg["origin"]
            if not isinstance(origin, dict) or not _number(origin.get("lat")) or not _number(
                    origin.get("lon")):
                raise InvalidInputError("formula: geo_distance.origin is {lat, lon}")
            parse_path(str(arg["to"]))
        elif op == "datetime":
            if not isinstance(arg, str) or math.isnan(parse_datetime(arg)):
                raise InvalidInputError(f"formula: {arg!r} is not a datetime")
        elif op == "datetime_key":
            if not isinstance(arg, str):
                raise InvalidInputError("formula: datetime_key names a payload key")
            parse_path(arg)
        elif op in ("condition", "has_id", "nested", "must", "should", "must_not",
                    "is_empty", "is_null", "has_vector", "min_should"):
            pass  # a filter condition: the filter compiler checks it
        else:
            raise InvalidInputError(f"formula: unknown operation {op!r}")

    walk(formula, 0)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)


def _fields(arg: Any, op: str, required: set[str], optional: set[str]) -> None:
    if not isinstance(arg, dict) or not required <= set(arg) or set(arg) - required - optional:
        raise InvalidInputError(f"formula: {op} takes {sorted(required | optional)}")


def evaluate(query: FormulaQuery, inputs: Inputs) -> F64:
    """The formula's value for each candidate, in ``inputs.ids`` order."""
    n = len(inputs.ids)
    payloads: list[dict[str, Any] | None] | None = None

    def payload_values(key: str, as_datetime: bool = False) -> F64:
        nonlocal payloads
        if payloads is None:
            payloads = inputs.payloads()
        path = parse_path(key)
        out = np.empty(n, np.float64)
        default = query.defaults.get(key)
        for j, payload in enumerate(payloads):
            value = _first_number(values_at(payload, path) if payload else [], as_datetime)
            if value is None:
                value = _first_number([default], as_datetime) if default is not None else None
            if value is None:
                raise InvalidInputError(f"formula: point {inputs.ids[j]!r} has no number at "
                                        f"{key!r} and defaults give none")
            out[j] = value
        return out

    def run(node: Any) -> F64:
        if isinstance(node, (int, float)):
            return np.full(n, float(node))
        if isinstance(node, str):
            score = _SCORE.match(node)
            if score:
                i = int(score.group(1) or 0)
                if i >= len(inputs.scores):
                    raise InvalidInputError(f"formula: {node} names prefetch {i}, the query "
                                            f"has {len(inputs.scores)}")
                default = float(query.defaults.get(node, 0.0))
                by_id = inputs.scores[i]
                return np.fromiter((by_id.get(pid, default) for pid in inputs.ids),
                                   np.float64, n)
            return payload_values(node)
        ((op, arg),) = node.items() if len(node) == 1 else (("condition", node),)
        if op == "sum":
            return np.sum([run(a) for a in arg], axis=0)  # type: ignore[no-any-return]
        if op == "mult":
            return np.prod([run(a) for a in arg], axis=0)  # type: ignore[no-any-return]
        if op in _UNARY:
            with np.errstate(all="ignore"):
                return _UNARY[op](run(arg))  # type: ignore[no-any-return]
        if op == "pow":
            with np.errstate(all="ignore"):
                return np.power(run(arg["base"]), run(arg["exponent"]))
        if op == "div":
            left, right = run(arg["left"]), run(arg["right"])
            with np.errstate(all="ignore"):
                out = left / right
            if "by_zero_default" in arg:
                out = np.where(right == 0, float(arg["by_zero_default"]), out)
            return out
        if op in _DECAYS:
            return _decay(op, run(arg["x"]), run(arg.get("target", 0.0)),
                          float(arg.get("scale", 1.0)), float(arg.get("midpoint", 0.5)))
        if op == "geo_distance":
            return _geo_distance(arg, payload_points(str(arg["to"])))
        if op == "datetime":
            return np.full(n, parse_datetime(arg))
        if op == "datetime_key":
            return payload_values(arg, as_datetime=True)
        admitted = inputs.matches(node)
        return np.fromiter((pid in admitted for pid in inputs.ids), np.float64, n)

    def payload_points(key: str) -> list[Any]:
        nonlocal payloads
        if payloads is None:
            payloads = inputs.payloads()
        path = parse_path(key)
        out = []
        for j, payload in enumerate(payloads):
            found = [v for v in (values_at(payload, path) if payload else [])
                     if isinstance(v, dict) and _number(v.get("lat")) and _number(v.get("lon"))]
            point = found[0] if found else query.defaults.get(key)
            if not isinstance(point, dict):
                raise InvalidInputError(f"formula: point {inputs.ids[j]!r} has no geo point "
                                        f"at {key!r} and defaults give none")
            out.append(point)
        return out

    values = np.asarray(run(query.formula), dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise InvalidInputError(f"formula gave a value that is not a finite number for point "
                                f"{inputs.ids[int(np.flatnonzero(bad)[0])]!r}")
    return values


def _first_number(values: Sequence[Any], as_datetime: bool) -> float | None:
    for value in values:
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
        if isinstance(value, str):
            moment = parse_datetime(value)
            if not math.isnan(moment):
                return moment
        if as_datetime:
            continue
    return None


def _decay(kind: str, x: F64, target: F64, scale: float, midpoint: float) -> F64:
    """Qdrant's decays: 1 at the target, ``midpoint`` at ``scale`` away from it."""
    d = np.abs(x - target)
    if kind == "lin_decay":
        return np.maximum(0.0, 1.0 - (1.0 - midpoint) * d / scale)  # type: ignore[no-any-return]
    if kind == "exp_decay":
        return np.exp(np.log(midpoint) * d / scale)  # type: ignore[no-any-return]
    return np.exp(np.log(midpoint) * (d / scale) ** 2)  # type: ignore[no-any-return]


def _geo_distance(arg: dict[str, Any], points: list[Any]) -> F64:
    lat0, lon0 = math.radians(arg["origin"]["lat"]), math.radians(arg["origin"]["lon"])
    lat = np.radians([float(p["lat"]) for p in points])
    lon = np.radians([float(p["lon"]) for p in points])
    h = np.sin((lat - lat0) / 2) ** 2 + math.cos(lat0) * np.cos(lat) * np.sin((lon - lon0) / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(h, 1.0))))
