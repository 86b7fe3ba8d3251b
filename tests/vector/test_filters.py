"""The Qdrant filter language, checked against an independent Python evaluator.

``matches(payload, point_id, filter)`` below is a plain recursive reading of
Qdrant's semantics (lib/segment/src/payload_storage/query_checker.rs,
condition_checker.rs and json_path/): a field condition looks at every value
found at its path (a key step only looks inside objects, ``[]`` opens an
array, ``[N]`` takes one element, and an array found at the end of the path
fans out), and holds if any one value satisfies it; several tests on one key
(match, range, is_empty, is_null) are OR-ed. Random payloads and random filters are compared with
count(), scroll() and exact search over collections whose points are spread
over sealed, frozen and mutable segments, with and without payload indexes.

The random data stays clear of the few places where Qdrant's own semantics are
ambiguous (tested separately by hand): arrays holding null, integral floats and
objects under ``match.except``, and empty ``should`` lists.
"""

from __future__ import annotations

import random
import re
import uuid
from typing import Any

import numpy as np
import pytest
from vutil import check_topk, id_sort_key, oracle_scores, stored_vector

import peregrine

# --------------------------------------------------------------------------
# Reference evaluator
# --------------------------------------------------------------------------
_MISSING = object()


def _steps(path: str) -> list[Any]:
    steps: list[Any] = []
    for part in path.split("."):
        m = re.fullmatch(r"([^\[\]]+)((?:\[\d*\])*)", part)
        assert m is not None, path
        steps.append(m.group(1))
        steps += [None if i == "" else int(i) for i in re.findall(r"\[(\d*)\]", m.group(2))]
    return steps


def nodes_at(payload: Any, path: str) -> list[Any]:
    """What sits at the end of a path; only [] (all) and [N] (one) step into arrays."""
    nodes = [] if payload is None else [payload]
    for step in _steps(path):
        found: list[Any] = []
        for node in nodes:
            if isinstance(step, str):
                if isinstance(node, dict) and step in node:
                    found.append(node[step])
            elif isinstance(node, list):
                found.extend(node if step is None else node[step:step + 1])
        nodes = found
    return nodes


def values_at(payload: Any, path: str) -> list[Any]:
    """The values a field condition tests: arrays at the end of the path fan out."""
    out: list[Any] = []
    for node in nodes_at(payload, path):
        out.extend(node) if isinstance(node, list) else out.append(node)
    return out


def _same(stored: Any, wanted: Any) -> bool:
    """JSON equality as Qdrant matches it: bools only equal bools, ints only ints."""
    if isinstance(wanted, bool) or isinstance(stored, bool):
        return isinstance(wanted, bool) and isinstance(stored, bool) and stored == wanted
    if isinstance(wanted, int):
        return type(stored) is int and stored == wanted
    return isinstance(stored, str) and stored == wanted


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _field(cond: dict[str, Any], payload: Any) -> bool:
    tests = [k for k in ("match", "range", "values_count", "is_empty", "is_null")
             if cond.get(k) is not None]
    return any(_field_test(kind, cond[kind], cond["key"], payload) for kind in tests)


def _field_test(kind: str, arg: Any, key: str, payload: Any) -> bool:
    if kind == "is_empty":
        present = any(n is not None and n != [] for n in nodes_at(payload, key))
        return present != arg
    if kind == "is_null":
        nulls = any(n is None or (isinstance(n, list) and None in n)
                    for n in nodes_at(payload, key))
        return nulls == arg
    vals = values_at(payload, key)
    if kind == "values_count":  # numbers, strings and booleans; 0 when missing
        n = sum(1 for v in vals if isinstance(v, (int, float, str)))
        return all(bound is None or op(n, bound) for name, op in (
            ("gt", lambda a, b: a > b), ("gte", lambda a, b: a >= b),
            ("lt", lambda a, b: a < b), ("lte", lambda a, b: a <= b))
            for bound in (arg.get(name),))
    if kind == "match":
        ((kind, arg),) = arg.items()
        if kind == "value":
            return any(_same(v, arg) for v in vals)
        if kind == "any":
            return any(_same(v, a) for v in vals for a in arg)
        if kind == "except":
            def outside(v: Any) -> bool:
                if v is None:
                    return False
                if isinstance(v, (dict, list, float)):
                    return True  # never equal to a keyword/integer/bool
                return not any(_same(v, a) for a in arg)
            return any(outside(v) for v in vals)
        if kind == "text":
            return any(isinstance(v, str) and arg in v for v in vals)
        raise AssertionError(kind)
    rng = arg

    def inside(x: float) -> bool:
        return ((rng.get("gt") is None or x > rng["gt"])
                and (rng.get("gte") is None or x >= rng["gte"])
                and (rng.get("lt") is None or x < rng["lt"])
                and (rng.get("lte") is None or x <= rng["lte"]))

    return any(_is_number(v) and inside(v) for v in vals)


def _condition(cond: dict[str, Any], payload: Any, point_id: Any) -> bool:
    if any(k in cond for k in ("must", "should", "must_not", "min_should")):
        return matches(payload, point_id, cond)
    if "key" in cond:
        return _field(cond, payload)
    if "has_id" in cond:
        return point_id in {_canon(i) for i in cond["has_id"]}
    if "is_empty" in cond:
        return all(v is None for v in values_at(payload, cond["is_empty"]["key"]))
    if "is_null" in cond:
        return any(v is None for v in values_at(payload, cond["is_null"]["key"]))
    return _field(cond, payload)


def _listify(x: Any) -> list[Any]:
    return [x] if isinstance(x, dict) else list(x or [])


def matches(payload: Any, point_id: Any, flt: dict[str, Any] | None) -> bool:
    if not flt:
        return True
    ok = all(_condition(c, payload, point_id) for c in _listify(flt.get("must")))
    should = _listify(flt.get("should"))
    if should:
        ok = ok and any(_condition(c, payload, point_id) for c in should)
    ok = ok and not any(_condition(c, payload, point_id) for c in _listify(flt.get("must_not")))
    ms = flt.get("min_should")
    if ms is not None:
        hits = sum(_condition(c, payload, point_id) for c in _listify(ms["conditions"]))
        ok = ok and hits >= ms["min_count"]
    return ok


def _canon(pid: Any) -> Any:
    return pid if isinstance(pid, int) else str(uuid.UUID(pid))


# --------------------------------------------------------------------------
# Random payloads and filters
# --------------------------------------------------------------------------
COLORS = ["red", "green", "blue", "Red"]
WORDS = ["apple", "banana", "cherry", "apricot", "grape", "app"]
INTS = [-3, -2, -1, 0, 1, 2, 3]


def gen_payload(r: random.Random) -> dict[str, Any] | None:
    if r.random() < 0.08:
        return None
    p: dict[str, Any] = {}
    x = r.random()
    if x < 0.45:
        p["color"] = r.choice(COLORS)
    elif x < 0.65:
        p["color"] = [r.choice(COLORS) for _ in range(r.randint(0, 3))]
    elif x < 0.75:
        p["color"] = None
    x = r.random()
    if x < 0.35:
        p["n"] = r.choice(INTS)
    elif x < 0.45:
        p["n"] = r.choice([-2.5, -0.5, 0.5, 1.5, 2.5])
    elif x < 0.55:
        p["n"] = r.choice([True, False])
    elif x < 0.68:
        p["n"] = [r.choice([*INTS, 0.5, True]) for _ in range(r.randint(0, 3))]
    elif x < 0.73:
        p["n"] = None
    elif x < 0.8:
        p["n"] = str(r.choice(INTS))  # a numeric *string* is no number
    x = r.random()
    if x < 0.4:
        p["flag"] = r.choice([True, False])
    elif x < 0.55:
        p["flag"] = r.choice([0, 1])
    x = r.random()
    if x < 0.5:
        meta: dict[str, Any] = {}
        if r.random() < 0.7:
            meta["size"] = r.choice([*INTS, None, 1.5])
        if r.random() < 0.6:
            meta["tags"] = [r.choice(WORDS) for _ in range(r.randint(0, 3))]
        p["meta"] = meta
    elif x < 0.6:
        p["meta"] = None
    elif x < 0.65:
        p["meta"] = "flat"
    if r.random() < 0.5:
        p["items"] = [{"k": r.choice("abc"), "v": r.choice(INTS)}
                      for _ in range(r.randint(0, 3))]
    if r.random() < 0.6:
        p["text"] = " ".join(r.choice(WORDS) for _ in range(r.randint(1, 3)))
    return p


# "items.v" reads nothing (a key step does not enter the array), "items[0].k" the first item.
SCALAR_KEYS = ["color", "n", "flag", "meta.size", "meta.tags", "items[].k", "items.v",
               "items[0].k", "text", "nope"]
ANY_KEYS = [*SCALAR_KEYS, "meta", "items"]  # objects are fine for is_empty / is_null
MATCH_POOL: list[Any] = [*COLORS, *INTS, True, False, "2", "a", "b", "apple"]


def gen_condition(r: random.Random, depth: int, ids: list[Any]) -> dict[str, Any]:
    kinds = ["value", "any", "except", "text", "range", "is_empty", "is_null", "has_id",
             "field_empty", "field_null", "either"]
    weights = [5, 3, 2, 1, 3, 1, 1, 1, 1, 1, 1]
    if depth < 3:
        kinds.append("nested")
        weights.append(2)
    kind = r.choices(kinds, weights)[0]
    key = r.choice(SCALAR_KEYS)
    if kind == "value":
        return {"key": key, "match": {"value": r.choice(MATCH_POOL)}}
    if kind == "any":
        return {"key": key, "match": {"any": r.sample(MATCH_POOL, r.randint(0, 4))}}
    if kind == "except":
        return {"key": key, "match": {"except": r.sample(MATCH_POOL, r.randint(0, 4))}}
    if kind == "text":
        return {"key": r.choice(["text", "meta.tags", "color"]),
                "match": {"text": r.choice(["app", "an", "e", "Red", "zz", "apple banana"])}}
    if kind == "range":
        bounds = r.sample(["gt", "gte", "lt", "lte"], r.randint(1, 2))
        return {"key": r.choice(["n", "meta.size", "items[].v", "flag", "color"]),
                "range": {b: r.choice([-2, -1, 0, 0.5, 1, 1.5, 2, 3]) for b in bounds}}
    if kind in ("is_empty", "is_null"):
        return {kind: {"key": r.choice(ANY_KEYS)}}
    if kind in ("field_empty", "field_null"):
        test = "is_empty" if kind == "field_empty" else "is_null"
        return {"key": r.choice(ANY_KEYS), test: r.choice([True, False])}
    if kind == "either":  # several tests on one key are OR-ed
        return {"key": r.choice(["n", "meta.size"]), "match": {"value": r.choice(INTS)},
                "range": {"gt": r.choice([-1, 0, 1])}}
    if kind == "has_id":
        picked = r.sample(ids, min(len(ids), r.randint(0, 6)))
        picked = [p.upper() if isinstance(p, str) and r.random() < 0.5 else p for p in picked]
        return {"has_id": [*picked, *r.sample([10**15, str(uuid.uuid4())], r.randint(0, 1))]}
    return gen_filter(r, depth + 1, ids)


def gen_filter(r: random.Random, depth: int, ids: list[Any]) -> dict[str, Any]:
    flt: dict[str, Any] = {}
    for clause in ("must", "should", "must_not"):
        if r.random() < 0.45:
            conds = [gen_condition(r, depth, ids) for _ in range(r.randint(1, 3))]
            flt[clause] = conds[0] if len(conds) == 1 and r.random() < 0.2 else conds
    if r.random() < 0.15:
        conds = [gen_condition(r, depth, ids) for _ in range(r.randint(1, 3))]
        flt["min_should"] = {"conditions": conds, "min_count": r.randint(0, 2)}
    if not flt:
        flt["must"] = [gen_condition(r, depth, ids)]
    return flt


# --------------------------------------------------------------------------
# Randomised comparison
# --------------------------------------------------------------------------
INDEXED = {"color": "keyword", "n": "integer", "flag": "bool", "meta.size": "integer",
           "items[].k": "keyword", "text": "keyword"}


def _build(db: peregrine.Database, r: random.Random, index_mode: str
           ) -> tuple[peregrine.Collection, dict[Any, tuple[np.ndarray, Any]]]:
    c = db.create_collection("f", 8, "cosine", index={"segment_rows": 64, "max_segments": 8})
    if index_mode == "declared_before":
        for field, schema in INDEXED.items():
            c.create_payload_index(field, schema)
    rng = np.random.default_rng(r.randrange(2**32))
    ids: list[Any] = r.sample(range(10**6), 200) + [str(uuid.UUID(int=r.getrandbits(128)))
                                                   for _ in range(60)]
    r.shuffle(ids)
    vecs = rng.standard_normal((len(ids), 8)).astype(np.float32)
    payloads = [gen_payload(r) for _ in ids]
    model = {pid: (stored_vector("cosine", v), p)
             for pid, v, p in zip(ids, vecs, payloads, strict=True)}
    c.upsert(ids[:130], vecs[:130], payloads[:130])
    c.optimize()  # one sealed segment
    c.upsert(ids[130:], vecs[130:], payloads[130:])  # two frozen + one active mutable
    over = r.sample(ids, 25)
    new_payloads = [gen_payload(r) for _ in over]
    new_vecs = rng.standard_normal((len(over), 8)).astype(np.float32)
    c.upsert(over, new_vecs, new_payloads)
    for pid, v, p in zip(over, new_vecs, new_payloads, strict=True):
        model[pid] = (stored_vector("cosine", v), p)
    gone = r.sample(ids, 15)
    c.delete(ids=gone)
    for pid in gone:
        model.pop(pid, None)
    edit = [pid for pid in r.sample(ids, 10) if pid in model]
    c.set_payload(edit, {"color": "green", "flag": True})
    for pid in edit:
        model[pid] = (model[pid][0], {**(model[pid][1] or {}), "color": "green", "flag": True})
    if index_mode == "declared_after":
        for field, schema in INDEXED.items():
            c.create_payload_index(field, schema)
    assert c.info().sealed_segments == 1 and c.info().unindexed_points > 64
    return c, {_canon(k): v for k, v in model.items()}


def _compare(c: peregrine.Collection, model: dict[Any, tuple[np.ndarray, Any]],
             r: random.Random, n_filters: int) -> None:
    ids = list(model)
    rng = np.random.default_rng(r.randrange(2**32))
    nonempty = 0
    for i in range(n_filters):
        flt = gen_filter(r, 0, ids)
        want = {pid for pid, (_, p) in model.items() if matches(p, pid, flt)}
        nonempty += bool(want) and len(want) < len(model)
        assert c.count(flt) == len(want), flt
        if i % 3 == 0:
            recs, nxt = c.scroll(filter=flt, limit=1000)
            assert nxt is None
            assert [rec.id for rec in recs] == sorted(want, key=id_sort_key), flt
        if i % 3 == 1:
            q = rng.standard_normal(8).astype(np.float32)
            oracle = oracle_scores("cosine", q, {pid: model[pid][0] for pid in want})
            check_topk(c.search(q, k=8, filter=flt, exact=True), oracle, 8, "cosine")
            ann = c.search(q, k=8, filter=flt)
            assert {h.id for h in ann} <= want, flt
            assert len({h.id for h in ann}) == len(ann)
    assert nonempty > n_filters // 4  # the generator produced selective filters


@pytest.mark.parametrize("index_mode", ["none", "declared_before", "declared_after"])
def test_random_filters_match_reference(open_db: Any, index_mode: str) -> None:
    r = random.Random(f"filters-{index_mode}")
    db = open_db()
    c, model = _build(db, r, index_mode)
    _compare(c, model, r, 250)
    c.optimize()  # everything sealed (declared fields persisted), tombstones dropped
    assert c.info().sealed_segments == 1
    _compare(c, model, r, 150)
    db.close()
    c = open_db().collection("f")  # persisted field indexes load from disk
    _compare(c, model, r, 150)


# --------------------------------------------------------------------------
# Hand-written cases: each construct on its own
# --------------------------------------------------------------------------
CASES: list[tuple[Any, dict[str, Any] | None]] = [
    (1, {"s": "red", "i": 1, "b": True, "f": 1.5, "arr": [1, 2, 3], "o": {"x": {"y": 5}}}),
    (2, {"s": "blue", "i": True, "b": 1, "f": 2.5, "arr": [], "o": {"x": None}}),
    (3, {"s": ["red", "green"], "i": [0, 7], "b": False, "arr": [3, "3"], "o": None}),
    (4, {"s": None, "i": None, "arr": None,
         "objs": [{"k": "a", "v": 1}, {"k": "b", "v": 2}]}),
    (5, {"s": "dark red", "i": "1", "f": -1.0e9, "o": {"x": {"y": [5, 6]}},
         "objs": [{"k": "b", "v": 1}]}),
    (6, {}),
    (7, None),
    ("1c2d3e4f-0000-4000-8000-00000000abcd", {"s": "red", "i": 2, "o": {}}),
]


@pytest.fixture(params=["mutable", "sealed", "sealed+indexed"])
def hand(request: pytest.FixtureRequest, db: peregrine.Database) -> peregrine.Collection:
    c = db.create_collection("h", 4, "dot")
    if request.param == "sealed+indexed":
        for field in ("s", "i", "b", "f", "arr", "o.x.y", "objs[].k"):
            c.create_payload_index(field, "keyword")
    ids = [pid for pid, _ in CASES]
    c.upsert(ids, np.ones((len(ids), 4)), [p for _, p in CASES])
    if request.param != "mutable":
        c.optimize()
    return c


def _ids(c: peregrine.Collection, flt: dict[str, Any]) -> set[Any]:
    got = {r.id for r in c.scroll(filter=flt, limit=100)[0]}
    want = {pid for pid, p in CASES if matches(p, _canon(pid), flt)}
    assert got == want, (flt, got, want)  # the reference agrees with the expectation too
    assert c.count(flt) == len(got)
    return got


def _m(key: str, **match: Any) -> dict[str, Any]:
    return {"must": [{"key": key, "match": match}]}


def _r(key: str, **rng: Any) -> dict[str, Any]:
    return {"must": [{"key": key, "range": rng}]}


U = "1c2d3e4f-0000-4000-8000-00000000abcd"


def test_match_value_keeps_types_apart(hand: peregrine.Collection) -> None:
    assert _ids(hand, _m("s", value="red")) == {1, 3, U}  # array elements count
    assert _ids(hand, _m("i", value=1)) == {1}  # not True (2), not "1" (5)
    assert _ids(hand, _m("i", value=True)) == {2}
    assert _ids(hand, _m("b", value=True)) == {1}  # not 1 (2)
    assert _ids(hand, _m("b", value=1)) == {2}
    assert _ids(hand, _m("b", value=False)) == {3}
    assert _ids(hand, _m("arr", value=3)) == {1, 3}
    assert _ids(hand, _m("arr", value="3")) == {3}
    assert _ids(hand, _m("i", value="1")) == {5}
    assert _ids(hand, _m("missing", value=1)) == set()


def test_match_any_except_text(hand: peregrine.Collection) -> None:
    assert _ids(hand, _m("s", any=["green", "blue"])) == {2, 3}
    assert _ids(hand, _m("i", any=[0, 2])) == {3, U}
    assert _ids(hand, _m("s", any=[])) == set()
    # except: some value outside the list; null/missing/[] never match
    assert _ids(hand, {"must": [{"key": "s", "match": {"except": ["red"]}}]}) == {2, 3, 5}
    assert _ids(hand, {"must": [{"key": "arr", "match": {"except": [1, 2, 3]}}]}) == {3}
    assert _ids(hand, {"must": [{"key": "i", "match": {"except": [1]}}]}) == {2, 3, 5, U}
    assert _ids(hand, {"must": [{"key": "s", "match": {"except": []}}]}) == {1, 2, 3, 5, U}
    assert _ids(hand, _m("s", text="red")) == {1, 3, 5, U}
    assert _ids(hand, _m("s", text="dark")) == {5}
    assert _ids(hand, _m("i", text="1")) == {5}  # only strings are searched


def test_range_bounds_and_types(hand: peregrine.Collection) -> None:
    assert _ids(hand, _r("f", gt=1.5)) == {2}
    assert _ids(hand, _r("f", gte=1.5)) == {1, 2}
    assert _ids(hand, _r("f", lt=1.5)) == {5}
    assert _ids(hand, _r("f", lte=1.5, gte=-1e10)) == {1, 5}
    assert _ids(hand, _r("i", gte=0)) == {1, 3, U}  # True and "1" are not numbers
    assert _ids(hand, _r("arr", gt=2.5, lt=3.5)) == {1, 3}  # any element; "3" is a string
    assert _ids(hand, _r("o.x.y", gte=6)) == {5}
    assert _ids(hand, _r("i", gt=None, lt=100)) == {1, 3, U}  # None bounds are ignored
    assert _ids(hand, _r("s", gt=0)) == set()


def test_values_count(hand: peregrine.Collection) -> None:
    for bounds in ({"gt": 1}, {"gte": 2, "lte": 3}, {"lt": 1}, {"lte": 1}, {"gte": 0}):
        _ids(hand, {"must": [{"key": "arr", "values_count": bounds}]})
        _ids(hand, {"must": [{"key": "s", "values_count": bounds}]})
    assert _ids(hand, {"must": [{"key": "arr", "values_count": {"gt": 1}}]})


def test_is_empty_and_is_null(hand: peregrine.Collection) -> None:
    # missing, null and [] are empty; {} is a value
    assert _ids(hand, {"must": [{"is_empty": {"key": "arr"}}]}) == {2, 4, 5, 6, 7, U}
    assert _ids(hand, {"must": [{"is_empty": {"key": "o"}}]}) == {3, 4, 6, 7}
    assert _ids(hand, {"must": [{"is_empty": {"key": "o.x"}}]}) == {2, 3, 4, 6, 7, U}
    assert _ids(hand, {"must": [{"is_null": {"key": "s"}}]}) == {4}
    assert _ids(hand, {"must": [{"is_null": {"key": "o"}}]}) == {3}
    assert _ids(hand, {"must": [{"is_null": {"key": "o.x"}}]}) == {2}
    assert _ids(hand, {"must": [{"is_null": {"key": "nothing"}}]}) == set()
    assert _ids(hand, {"must_not": [{"is_empty": {"key": "s"}}]}) == {1, 2, 3, 5, U}


def test_nested_paths_and_arrays_of_objects(hand: peregrine.Collection) -> None:
    assert _ids(hand, _m("o.x.y", value=5)) == {1, 5}
    assert _ids(hand, _m("objs[].k", value="b")) == {4, 5}
    assert _ids(hand, _m("objs.k", value="b")) == set()  # a key step does not enter arrays
    assert _ids(hand, _m("objs[0].k", value="b")) == {5}
    # conditions on the same array are evaluated independently (no "nested" clause)
    both = {"must": [{"key": "objs[].k", "match": {"value": "a"}},
                     {"key": "objs[].v", "match": {"value": 2}}]}
    assert _ids(hand, both) == {4}
    assert _ids(hand, _m("o.x.y.z", value=5)) == set()


def test_boolean_clauses(hand: peregrine.Collection) -> None:
    red = {"key": "s", "match": {"value": "red"}}
    one = {"key": "i", "match": {"value": 1}}
    blue = {"key": "s", "match": {"value": "blue"}}
    assert _ids(hand, {"should": [red, blue]}) == {1, 2, 3, U}
    assert _ids(hand, {"must": [red], "must_not": [one]}) == {3, U}
    assert _ids(hand, {"must": red}) == {1, 3, U}  # a single condition needs no list
    assert _ids(hand, {"must_not": [red, blue]}) == {4, 5, 6, 7}
    assert _ids(hand, {"min_should": {"conditions": [red, one, blue], "min_count": 2}}) == {1}
    assert _ids(hand, {"min_should": {"conditions": [red, one], "min_count": 0}}) == \
        {pid for pid, _ in CASES}
    nested = {"should": [{"must": [red, one]}, {"must_not": [{"is_empty": {"key": "objs"}}]}]}
    assert _ids(hand, nested) == {1, 4, 5}
    assert _ids(hand, {"must": [{"must_not": [{"should": [red, blue]}]}]}) == {4, 5, 6, 7}
    assert _ids(hand, {}) == {pid for pid, _ in CASES}
    assert _ids(hand, {"must": []}) == {pid for pid, _ in CASES}


def test_has_id_with_ints_and_uuids(hand: peregrine.Collection) -> None:
    assert _ids(hand, {"must": [{"has_id": [1, 5, 99]}]}) == {1, 5}
    assert _ids(hand, {"must": [{"has_id": [U.upper()]}]}) == {U}
    assert _ids(hand, {"must": [{"has_id": [U.replace("-", "")]}]}) == {U}
    assert _ids(hand, {"must": [{"has_id": []}]}) == set()
    assert _ids(hand, {"must_not": [{"has_id": [1, 2, 3, U]}]}) == {4, 5, 6, 7}
    # hits carry the filter through search too
    hits = hand.search([1, 1, 1, 1], k=10, filter={"must": [{"has_id": [2, U]}]})
    assert {h.id for h in hits} == {2, U}


def test_filters_follow_payload_edits_and_deletes(db: peregrine.Database) -> None:
    c = db.create_collection("e", 4, "dot", index={"segment_rows": 16})
    c.create_payload_index("tag", "keyword")
    c.upsert(list(range(40)), np.ones((40, 4)), [{"tag": "a"}] * 40)
    c.optimize()
    flt_a = _m("tag", value="a")
    flt_b = _m("tag", value="b")
    c.set_payload(list(range(10)), {"tag": "b"})
    assert (c.count(flt_a), c.count(flt_b)) == (30, 10)
    c.delete(filter=flt_b)
    assert (c.count(flt_a), c.count(flt_b), c.count()) == (30, 0, 30)
    c.upsert([0, 1], np.ones((2, 4)), [{"tag": ["a", "b"]}, {"tag": "b"}])
    assert (c.count(flt_a), c.count(flt_b)) == (31, 2)
    c.optimize()
    assert (c.count(flt_a), c.count(flt_b)) == (31, 2)


@pytest.mark.parametrize("value", [2.0, {"x": 1}], ids=["integral-float", "object"])
def test_match_except_on_integral_float_and_object(db: peregrine.Database, value: Any) -> None:
    c = db.create_collection("x", 2, "dot")
    c.upsert([1, 2], [[1, 0], [0, 1]], [{"f": 2.5}, {"f": value}])
    flt = {"must": [{"key": "f", "match": {"except": ["a"]}}]}
    assert {r.id for r in c.scroll(filter=flt)[0]} == {1, 2}


def test_is_empty_on_array_of_null(db: peregrine.Database) -> None:
    c = db.create_collection("x", 2, "dot")
    c.upsert([1, 2, 3], [[1, 0], [0, 1], [1, 1]], [{"a": [None]}, {"a": []}, {"a": None}])
    assert c.count({"must": [{"is_empty": {"key": "a"}}]}) == 2


def test_generated_filters_smoke(hand: peregrine.Collection) -> None:
    """The random generator's filters also agree on the hand-written payloads."""
    r = random.Random(5)
    ids = [_canon(pid) for pid, _ in CASES]
    for _ in range(200):
        _ids(hand, gen_filter(r, 0, ids))


def test_field_condition_forms_of_is_empty_and_is_null(hand: peregrine.Collection) -> None:
    """Qdrant's {"key": k, "is_empty": bool} / {"key": k, "is_null": bool} forms."""
    assert _ids(hand, {"must": [{"key": "arr", "is_empty": True}]}) == {2, 4, 5, 6, 7, U}
    assert _ids(hand, {"must": [{"key": "arr", "is_empty": False}]}) == {1, 3}
    assert _ids(hand, {"must": [{"key": "s", "is_null": True}]}) == {4}
    # false: anything but null, a missing field included
    assert _ids(hand, {"must": [{"key": "o.x", "is_null": False}]}) == {1, 3, 4, 5, 6, 7, U}


def test_several_tests_on_one_key_are_ored(hand: peregrine.Collection) -> None:
    either = {"key": "i", "match": {"value": 1}, "range": {"gte": 2}}
    assert _ids(hand, {"must": [either]}) == {1, 3, U}


def test_unknown_fields_of_a_condition_are_ignored(hand: peregrine.Collection) -> None:
    """As in Qdrant, whose conditions do not deny unknown fields (filters do)."""
    assert _ids(hand, {"must": [{"key": "s", "match": {"value": "red"}, "boost": 2}]}) == \
        {1, 3, U}
