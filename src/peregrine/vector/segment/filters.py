"""Qdrant's JSON filter language, compiled to numpy mask evaluators.

``compile_filter`` validates a filter once (raising InvalidFilterError with
the offending path) and returns a ``CompiledFilter``: a function from a
segment to a boolean mask over its rows. Leaf conditions are answered by the
segment's ``FieldIndex`` for that path, boolean clauses combine masks, so the
cost of a filter is a few vectorised operations per segment, not a Python
call per point. The query planner then counts the mask to choose between an
exact scan of the subset and filtered HNSW.

Supported: must / should / must_not / min_should, nested filters; field
conditions (``key`` with ``match`` value/any/except/text, ``range``
gt/gte/lt/lte, ``is_empty: bool``, ``is_null: bool``; several on one key are
OR-ed, as in Qdrant), ``has_id``, and the ``{"is_empty": {"key": ...}}`` /
``{"is_null": {"key": ...}}`` conditions. Keys are payload paths
(``peregrine.vector.paths``). As in Qdrant, a filter object refuses unknown
fields while a condition ignores them.

Every filter is bounded before it is compiled (``FilterLimits``): nesting
depth, number of conditions and of values listed, so that a request cannot
make evaluation (or the compiler's recursion) arbitrarily expensive.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from peregrine.core.deadline import check_deadline
from peregrine.core.errors import InvalidInputError
from peregrine.vector.errors import InvalidFilterError, InvalidPointIdError
from peregrine.vector.ids import KeyArray, encode_ids
from peregrine.vector.paths import parse_path
from peregrine.vector.segment import geo
from peregrine.vector.segment.payload_index import FieldIndex, Mask, parse_datetime
from peregrine.vector.segment.side import SideStore

if TYPE_CHECKING:
    from peregrine.vector.segment.nested import NestedView
from peregrine.vector.segment.text import MAX_QUERY_CHARS
from peregrine.vector.types import TextIndexParams


class Filterable(Protocol):
    """What a segment exposes to filter evaluation."""

    @property
    def n_rows(self) -> int: ...

    def field_index(self, path: str) -> FieldIndex: ...

    def keys_view(self) -> KeyArray: ...

    def side_store(self, dense: dict[str, tuple[int, str]], sparse: list[str],
                   multi: dict[str, int] | None = None) -> SideStore: ...

    def nested_view(self, key: str) -> NestedView: ...

    def lacking_primary(self) -> Mask | None:
        """The rows without the primary vector (``has_vector`` on it)."""
        ...


CompiledFilter = Callable[[Filterable], Mask]


@dataclass(frozen=True, slots=True)
class FilterLimits:
    """How large a filter may be. The engine's defaults only guard the process;
    a server sets tighter ones from its settings."""

    max_depth: int = 64  # nested filter objects
    max_conditions: int = 100_000  # leaf conditions and nested filters, in all
    max_values: int = 1_000_000  # ids in has_id and values in match any/except, in all


DEFAULT_FILTER_LIMITS = FilterLimits()


_CLAUSES = ("must", "should", "must_not", "min_should")
_RANGE_KEYS = ("gt", "gte", "lt", "lte")
_FIELD_TESTS = ("match", "range", "values_count", "geo_radius", "geo_bounding_box",
                "geo_polygon", "is_empty", "is_null")


class FilterContext(Protocol):
    """What a filter needs to know of its collection's layout."""

    def has_vector(self, name: str) -> CompiledFilter:
        """Which rows of a segment hold vector ``name`` (an unknown name raises)."""
        ...

    def text_index(self, path: str) -> TextIndexParams | None:
        """The full-text index declared on ``path``, if any."""
        ...


def compile_filter(spec: Any, limits: FilterLimits | None = None,
                   context: FilterContext | None = None) -> CompiledFilter | None:
    """``context``: the collection's vectors and text indexes; None: one unnamed
    vector and no text index."""
    # None for an empty/absent filter (matches everything).
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise InvalidFilterError("filter must be a JSON object")
    check_size(spec, limits or DEFAULT_FILTER_LIMITS)
    compiled = _compile_filter_obj(spec, "filter", context)
    if all(spec.get(k) in (None, [], {}) for k in _CLAUSES):
        return None  # validated, and it constrains nothing
    return compiled


def check_size(spec: Any, limits: FilterLimits) -> None:
    """Refuse a filter over the limits, without recursion (any depth is safe here).

    The walk holds iterators rather than copies of the condition lists, so a
    filter of a million conditions is refused after reading the first
    ``max_conditions`` of them, allocating next to nothing.
    """
    stack: list[tuple[Iterator[Any], int]] = [(iter((spec,)), 0)]
    conditions = values = 0
    while stack:
        items, depth = stack[-1]
        node = next(items, _END)
        if node is _END:
            stack.pop()
            continue
        if not isinstance(node, dict):
            continue
        if depth:
            conditions += 1
            if conditions > limits.max_conditions:
                raise InvalidFilterError(
                    f"filter has more than {limits.max_conditions} conditions (the limit)")
        if any(k in node for k in _CLAUSES):  # a (nested) filter object
            if depth + 1 > limits.max_depth:
                raise InvalidFilterError(
                    f"filter is nested more than {limits.max_depth} levels deep (the limit)")
            ms = node.get("min_should")
            parts = [node.get(c) for c in ("must", "should", "must_not")]
            parts.append(ms.get("conditions") if isinstance(ms, dict) else None)
            for part in parts:
                if isinstance(part, dict):
                    stack.append((iter((part,)), depth + 1))
                elif isinstance(part, list):
                    stack.append((iter(part), depth + 1))
            continue
        nested = node.get("nested")
        if isinstance(nested, dict) and isinstance(nested.get("filter"), dict):
            if depth + 1 > limits.max_depth:
                raise InvalidFilterError(
                    f"filter is nested more than {limits.max_depth} levels deep (the limit)")
            stack.append((iter((nested["filter"],)), depth + 1))
            continue
        has_id = node.get("has_id")
        if isinstance(has_id, list):
            values += len(has_id)
        match = node.get("match")
        if isinstance(match, dict):
            for kind in ("any", "except"):
                if isinstance(match.get(kind), list):
                    values += len(match[kind])
        if values > limits.max_values:
            raise InvalidFilterError(
                f"filter lists more than {limits.max_values} ids or values (the limit)")


_END = object()


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


def _compile_filter_obj(spec: dict[str, Any], where: str,
                        context: FilterContext | None) -> CompiledFilter:
    _check_keys(spec, set(_CLAUSES), where)
    must = [_compile_condition(c, f"{where}.must[{i}]", context)
            for i, c in enumerate(_as_list(spec.get("must"), f"{where}.must"))]
    should = [_compile_condition(c, f"{where}.should[{i}]", context)
              for i, c in enumerate(_as_list(spec.get("should"), f"{where}.should"))]
    must_not = [_compile_condition(c, f"{where}.must_not[{i}]", context)
                for i, c in enumerate(_as_list(spec.get("must_not"), f"{where}.must_not"))]
    min_should: tuple[list[CompiledFilter], int] | None = None
    if spec.get("min_should") is not None:
        ms = spec["min_should"]
        if not isinstance(ms, dict) or not isinstance(ms.get("min_count"), int):
            raise InvalidFilterError(f"{where}.min_should needs 'conditions' and 'min_count'")
        _check_keys(ms, {"conditions", "min_count"}, f"{where}.min_should")
        conds = [_compile_condition(c, f"{where}.min_should.conditions[{i}]", context)
                 for i, c in enumerate(_as_list(ms.get("conditions"), f"{where}.min_should"))]
        min_should = (conds, ms["min_count"])

    if len(must) == 1 and not should and not must_not and min_should is None:
        only = must[0]
        if isinstance(only, RowsFilter):
            return only  # keeps its row lists reachable (see RowsFilter)

        def evaluate_one(seg: Filterable) -> Mask:
            # The common single condition: its mask as it is (callers never write
            # into a filter's mask), not ANDed into a fresh all-true one.
            check_deadline()
            return only(seg)

        return evaluate_one

    def evaluate(seg: Filterable) -> Mask:
        # A deadline check per condition (~0.1 us): a request past its deadline stops
        # within one condition, however long the filter.
        n = seg.n_rows
        mask = np.ones(n, dtype=np.bool_)
        for cond in must:
            check_deadline()
            mask &= cond(seg)
        if should:
            any_mask = np.zeros(n, dtype=np.bool_)
            for cond in should:
                check_deadline()
                any_mask |= cond(seg)
            mask &= any_mask
        for cond in must_not:
            check_deadline()
            mask &= ~cond(seg)
        if min_should is not None:
            conds, min_count = min_should
            counts = np.zeros(n, dtype=np.int32)
            for cond in conds:
                check_deadline()
                counts += cond(seg)
            mask &= counts >= min_count
        return mask

    return evaluate


class RowsFilter:
    """``match.value`` / ``match.any`` on one key: a mask like any condition,
    and also the matching rows themselves, straight from the index postings.

    A selective filter's few rows are all a search scores; going through a
    mask of every row and back (zeroed, scattered, counted, scanned) cost
    about a third of a 1%-filter search on 200k rows.
    """

    def __init__(self, path: str, values: list[Any]) -> None:
        self.path = path
        self.values = values

    def __call__(self, seg: Filterable) -> Mask:
        return seg.field_index(self.path).match_any(self.values, seg.n_rows)

    def rows(self, seg: Filterable) -> npt.NDArray[np.int64]:
        return seg.field_index(self.path).match_rows(self.values, seg.n_rows)


def filter_rows(compiled: CompiledFilter | None, seg: Filterable) -> npt.NDArray[np.int64] | None:
    """The rows a filter selects in ``seg`` when it can name them without a
    mask (tombstones not applied); None when only a mask will do."""
    if isinstance(compiled, RowsFilter):
        check_deadline()
        return compiled.rows(seg)
    return None


def _compile_condition(cond: Any, where: str, context: FilterContext | None
                       ) -> CompiledFilter:
    check_deadline()
    if not isinstance(cond, dict):
        raise InvalidFilterError(f"{where} must be a JSON object")
    if any(k in cond for k in _CLAUSES):
        return _compile_filter_obj(cond, where, context)
    if "key" in cond:
        return _compile_field(cond, where, context)
    if "nested" in cond:
        _check_keys(cond, {"nested"}, where)
        return _compile_nested(cond["nested"], f"{where}.nested")
    if "has_id" in cond:
        _check_keys(cond, {"has_id"}, where)
        return _compile_has_id(cond["has_id"], where)
    if "has_vector" in cond:
        _check_keys(cond, {"has_vector"}, where)
        name = cond["has_vector"]
        if not isinstance(name, str):
            raise InvalidFilterError(f"{where}.has_vector: a vector name")
        if context is not None:
            return context.has_vector(name)
        if name != "":
            raise InvalidFilterError(f"{where}.has_vector: no vector named {name!r} (one "
                                     "unnamed vector, \"\")")
        return lambda seg: np.ones(seg.n_rows, dtype=np.bool_)  # every point has it
    if "is_empty" in cond or "is_null" in cond:
        kind = "is_empty" if "is_empty" in cond else "is_null"
        _check_keys(cond, {kind}, where)
        path = _key_of(cond[kind], f"{where}.{kind}")
        if kind == "is_empty":
            return lambda seg: ~seg.field_index(path).present(seg.n_rows)
        return lambda seg: seg.field_index(path).null(seg.n_rows)
    raise InvalidFilterError(
        f"{where}: expected a field condition (key + match/range/is_empty/is_null), has_id, "
        "is_empty, is_null or a nested filter"
    )


def _key_of(obj: Any, where: str) -> str:
    if not isinstance(obj, dict) or not isinstance(obj.get("key"), str) or not obj["key"]:
        raise InvalidFilterError(f"{where} needs a non-empty string 'key'")
    key = str(obj["key"])
    try:
        parse_path(key)
    except InvalidInputError as exc:
        raise InvalidFilterError(f"{where}: {exc}") from None
    return key


def _compile_nested(spec: Any, where: str) -> CompiledFilter:
    """Some object of the array at ``key`` meets the whole inner filter
    (``nested.py``); vectors and text indexes are not known inside it."""
    if not isinstance(spec, dict) or set(spec) != {"key", "filter"}:
        raise InvalidFilterError(f"{where} must be {{\"key\": ..., \"filter\": {{...}}}}")
    key = _key_of(spec, where)
    inner_spec = spec["filter"]
    if not isinstance(inner_spec, dict):
        raise InvalidFilterError(f"{where}.filter must be a JSON object")
    inner = _compile_filter_obj(inner_spec, f"{where}.filter", None)

    def run(seg: Filterable) -> Mask:
        view = seg.nested_view(key)
        return view.owners(inner(view), seg.n_rows)

    return run


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


def _compile_field(cond: dict[str, Any], where: str, context: FilterContext | None
                   ) -> CompiledFilter:
    """A key with one or more tests; several tests on one key are OR-ed (Qdrant)."""
    path = _key_of(cond, where)
    tests = [_compile_test(kind, cond[kind], path, where, context)
             for kind in _FIELD_TESTS if cond.get(kind) is not None]
    if not tests:
        raise InvalidFilterError(
            f"{where}: at least one field condition must be specified "
            "(match, range, values_count, geo_*, is_empty or is_null)")
    if len(tests) == 1:
        return tests[0]

    def either(seg: Filterable) -> Mask:
        mask = tests[0](seg)
        for test in tests[1:]:
            mask = mask | test(seg)
        return mask

    return either


def _compile_test(kind: str, arg: Any, path: str, where: str,
                  context: FilterContext | None) -> CompiledFilter:
    if kind == "match":
        return _compile_match(arg, path, where, context)
    if kind == "range":
        return _compile_range(arg, path, where)
    if kind in geo.CONDITIONS:
        inside = geo.CONDITIONS[kind](arg, f"{where}.{kind}")
        return lambda seg: seg.field_index(path).geo_mask(seg.n_rows, inside)
    if kind == "values_count":
        return _compile_values_count(arg, path, where)
    if not isinstance(arg, bool):
        raise InvalidFilterError(f"{where}.{kind} must be true or false")
    if kind == "is_empty":  # missing, null or []: is_empty true; false needs a value
        if arg:
            return lambda seg: ~seg.field_index(path).present(seg.n_rows)
        return lambda seg: seg.field_index(path).present(seg.n_rows)
    if arg:  # is_null: null itself or an array holding null; false: anything else
        return lambda seg: seg.field_index(path).has_null(seg.n_rows)
    return lambda seg: ~seg.field_index(path).has_null(seg.n_rows)


def _compile_match(match: Any, path: str, where: str, context: FilterContext | None
                   ) -> CompiledFilter:
    if not isinstance(match, dict) or len(match) != 1:
        raise InvalidFilterError(
            f"{where}.match must be one of {{value}}, {{any}}, {{except}}, {{text}}"
        )
    ((kind, arg),) = match.items()
    if kind == "value":
        if not _is_scalar(arg):
            raise InvalidFilterError(f"{where}.match.value must be a string, integer or bool")
        return RowsFilter(path, [arg])
    if kind in ("any", "except"):
        if not isinstance(arg, list) or not all(_is_scalar(v) for v in arg):
            raise InvalidFilterError(
                f"{where}.match.{kind} must be a list of strings or integers"
            )
        if kind == "any":
            return RowsFilter(path, arg)
        return lambda seg: seg.field_index(path).match_except(arg, seg.n_rows)
    if kind in ("text", "phrase", "text_any"):
        if not isinstance(arg, str):
            raise InvalidFilterError(f"{where}.match.{kind} must be a string")
        params = context.text_index(path) if context is not None else None
        if params is None:
            if kind == "text_any":
                raise InvalidFilterError(f"{where}.match.text_any needs a text index on "
                                         f"{path!r}")
            return lambda seg: seg.field_index(path).match_text(arg, seg.n_rows)
        if kind == "phrase" and not params.phrase_matching:
            raise InvalidFilterError(f"{where}.match.phrase needs the text index on {path!r} "
                                     "to have phrase_matching")
        if len(arg) > MAX_QUERY_CHARS:
            raise InvalidFilterError(f"{where}.match.{kind}: at most {MAX_QUERY_CHARS} "
                                     "characters")
        return lambda seg: seg.field_index(path).match_tokens(arg, kind, params, seg.n_rows)
    raise InvalidFilterError(f"{where}.match: unknown kind {kind!r}")


def _compile_values_count(arg: Any, path: str, where: str) -> CompiledFilter:
    if not isinstance(arg, dict) or not arg:
        raise InvalidFilterError(f"{where}.values_count must be an object with gt/gte/lt/lte")
    _check_keys(arg, set(_RANGE_KEYS), f"{where}.values_count")
    bounds: dict[str, float] = {}
    for name, value in arg.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidFilterError(f"{where}.values_count.{name} must be a non-negative "
                                     "integer")
        bounds[name] = float(value)
    return lambda seg: seg.field_index(path).values_count(seg.n_rows, **bounds)


def _compile_range(rng: Any, path: str, where: str) -> CompiledFilter:
    if not isinstance(rng, dict) or not rng:
        raise InvalidFilterError(f"{where}.range must be an object with gt/gte/lt/lte")
    _check_keys(rng, set(_RANGE_KEYS), f"{where}.range")
    given = {name: value for name, value in rng.items() if value is not None}
    if given and all(isinstance(v, str) for v in given.values()):
        # A datetime range (Qdrant's DatetimeRange): RFC 3339 bounds.
        moments: dict[str, float] = {}
        for name, value in given.items():
            moments[name] = parse_datetime(value)
            if moments[name] != moments[name]:
                raise InvalidFilterError(f"{where}.range.{name}: {value!r} is not an "
                                         "RFC 3339 datetime")
        return lambda seg: seg.field_index(path).datetime_range(seg.n_rows, **moments)
    bounds: dict[str, float] = {}
    for name, value in given.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise InvalidFilterError(f"{where}.range.{name} must be a number (or all "
                                     "bounds RFC 3339 datetimes)")
        bounds[name] = float(value)
    return lambda seg: seg.field_index(path).range(seg.n_rows, **bounds)
