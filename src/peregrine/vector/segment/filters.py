"""Qdrant's JSON filter language, compiled to numpy mask evaluators.

``compile_filter`` validates a filter once (raising InvalidFilterError with
the offending path) and returns a ``CompiledFilter``: a function from a
segment to a boolean mask over its rows. Leaf conditions are answered by the
segment's ``FieldIndex`` for that path, boolean clauses combine masks, so the
cost of a filter is a few vectorised operations per segment, not a Python
call per point. The query planner then counts the mask to choose between an
exact scan of the subset and filtered HNSW.

Supported: must / should / must_not / min_should, nested filters,
``match`` (value, any, except, text), ``range`` (gt, gte, lt, lte),
``has_id``, ``is_empty``, ``is_null``; keys are dotted paths (``a.b``,
``a[].b``), and an array matches when any of its elements does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from peregrine.core.errors import InvalidFilterError, InvalidPointIdError
from peregrine.vector.ids import KeyArray, encode_ids
from peregrine.vector.segment.payload_index import FieldIndex, Mask


class Filterable(Protocol):
    """What a segment exposes to filter evaluation."""

    @property
    def n_rows(self) -> int: ...

    def field_index(self, path: str) -> FieldIndex: ...

    def keys_view(self) -> KeyArray: ...


CompiledFilter = Callable[[Filterable], Mask]

_CLAUSES = ("must", "should", "must_not", "min_should")
_RANGE_KEYS = ("gt", "gte", "lt", "lte")


def compile_filter(spec: Any) -> CompiledFilter | None:
    """None for an empty/absent filter (matches everything)."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise InvalidFilterError("filter must be a JSON object")
    compiled = _compile_filter_obj(spec, "filter")
    if all(spec.get(k) in (None, [], {}) for k in _CLAUSES):
        return None  # validated, and it constrains nothing
    return compiled


def _check_keys(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(obj) - allowed
    if unknown:
        raise InvalidFilterError(f"{where}: unknown field(s) {sorted(unknown)}")


def _as_list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return value
    raise InvalidFilterError(f"{where} must be a list of conditions")


def _compile_filter_obj(spec: dict[str, Any], where: str) -> CompiledFilter:
    _check_keys(spec, set(_CLAUSES), where)
    must = [_compile_condition(c, f"{where}.must[{i}]")
            for i, c in enumerate(_as_list(spec.get("must"), f"{where}.must"))]
    should = [_compile_condition(c, f"{where}.should[{i}]")
              for i, c in enumerate(_as_list(spec.get("should"), f"{where}.should"))]
    must_not = [_compile_condition(c, f"{where}.must_not[{i}]")
                for i, c in enumerate(_as_list(spec.get("must_not"), f"{where}.must_not"))]
    min_should: tuple[list[CompiledFilter], int] | None = None
    if spec.get("min_should") is not None:
        ms = spec["min_should"]
        if not isinstance(ms, dict) or not isinstance(ms.get("min_count"), int):
            raise InvalidFilterError(f"{where}.min_should needs 'conditions' and 'min_count'")
        _check_keys(ms, {"conditions", "min_count"}, f"{where}.min_should")
        conds = [_compile_condition(c, f"{where}.min_should.conditions[{i}]")
                 for i, c in enumerate(_as_list(ms.get("conditions"), f"{where}.min_should"))]
        min_should = (conds, ms["min_count"])

    def evaluate(seg: Filterable) -> Mask:
        n = seg.n_rows
        mask = np.ones(n, dtype=np.bool_)
        for cond in must:
            mask &= cond(seg)
        if should:
            any_mask = np.zeros(n, dtype=np.bool_)
            for cond in should:
                any_mask |= cond(seg)
            mask &= any_mask
        for cond in must_not:
            mask &= ~cond(seg)
        if min_should is not None:
            conds, min_count = min_should
            counts = np.zeros(n, dtype=np.int32)
            for cond in conds:
                counts += cond(seg)
            mask &= counts >= min_count
        return mask

    return evaluate


def _compile_condition(cond: Any, where: str) -> CompiledFilter:
    if not isinstance(cond, dict):
        raise InvalidFilterError(f"{where} must be a JSON object")
    if any(k in cond for k in _CLAUSES):
        return _compile_filter_obj(cond, where)
    if "has_id" in cond:
        _check_keys(cond, {"has_id"}, where)
        return _compile_has_id(cond["has_id"], where)
    if "is_empty" in cond or "is_null" in cond:
        kind = "is_empty" if "is_empty" in cond else "is_null"
        _check_keys(cond, {kind}, where)
        path = _key_of(cond[kind], f"{where}.{kind}")
        if kind == "is_empty":
            return lambda seg: ~seg.field_index(path).present(seg.n_rows)
        return lambda seg: seg.field_index(path).null(seg.n_rows)
    if "key" in cond:
        return _compile_field(cond, where)
    raise InvalidFilterError(
        f"{where}: expected a field condition (key + match/range), has_id, is_empty, "
        "is_null or a nested filter"
    )


def _key_of(obj: Any, where: str) -> str:
    if not isinstance(obj, dict) or not isinstance(obj.get("key"), str) or not obj["key"]:
        raise InvalidFilterError(f"{where} needs a non-empty string 'key'")
    return str(obj["key"])


def _compile_has_id(ids: Any, where: str) -> CompiledFilter:
    if not isinstance(ids, list):
        raise InvalidFilterError(f"{where}.has_id must be a list of point ids")
    try:
        wanted = np.unique(encode_ids(ids))
    except InvalidPointIdError as exc:
        raise InvalidFilterError(f"{where}.has_id: {exc}") from None
    return lambda seg: np.isin(seg.keys_view(), wanted)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int)) and value is not None


def _compile_field(cond: dict[str, Any], where: str) -> CompiledFilter:
    path = _key_of(cond, where)
    _check_keys(cond, {"key", "match", "range"}, where)
    if ("match" in cond) == ("range" in cond):
        raise InvalidFilterError(f"{where}: a field condition needs exactly one of match/range")
    if "match" in cond:
        match = cond["match"]
        if not isinstance(match, dict) or len(match) != 1:
            raise InvalidFilterError(
                f"{where}.match must be one of {{value}}, {{any}}, {{except}}, {{text}}"
            )
        ((kind, arg),) = match.items()
        if kind == "value":
            if not _is_scalar(arg):
                raise InvalidFilterError(f"{where}.match.value must be a string, integer or bool")
            return lambda seg: seg.field_index(path).match_any([arg], seg.n_rows)
        if kind in ("any", "except"):
            if not isinstance(arg, list) or not all(_is_scalar(v) for v in arg):
                raise InvalidFilterError(
                    f"{where}.match.{kind} must be a list of strings or integers"
                )
            if kind == "any":
                return lambda seg: seg.field_index(path).match_any(arg, seg.n_rows)
            return lambda seg: seg.field_index(path).match_except(arg, seg.n_rows)
        if kind in ("text", "phrase"):
            if not isinstance(arg, str):
                raise InvalidFilterError(f"{where}.match.{kind} must be a string")
            return lambda seg: seg.field_index(path).match_text(arg, seg.n_rows)
        raise InvalidFilterError(f"{where}.match: unknown kind {kind!r}")
    rng = cond["range"]
    if not isinstance(rng, dict) or not rng:
        raise InvalidFilterError(f"{where}.range must be an object with gt/gte/lt/lte")
    _check_keys(rng, set(_RANGE_KEYS), f"{where}.range")
    bounds: dict[str, float] = {}
    for name, value in rng.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise InvalidFilterError(f"{where}.range.{name} must be a number")
        bounds[name] = float(value)
    return lambda seg: seg.field_index(path).range(seg.n_rows, **bounds)
