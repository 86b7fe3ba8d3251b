"""Every kind of bad input raises its typed error and changes nothing.

"Nothing changed" is checked through the public API (count, every point with
payload and vector, a fixed exact search), through the WAL size (a rejected
call must not log anything), and again after closing and reopening.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from vutil import dump

import peregrine
from peregrine import (
    AlreadyExistsError,
    CollectionNotFoundError,
    DimensionMismatchError,
    DuplicateIdError,
    InvalidFilterError,
    InvalidInputError,
    InvalidPayloadError,
    InvalidPointIdError,
    InvalidSnapshotError,
    InvalidVectorError,
)

DIM = 8
U1 = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
Q = np.linspace(-1, 1, DIM)
OK_VEC = [0.5] * DIM


def _state(c: peregrine.Collection) -> tuple[Any, ...]:
    return (
        c.count(),
        dump(c),
        [(h.id, round(h.score, 6)) for h in c.search(Q, k=6, exact=True)],
        c.info().wal_bytes,
        c.config.to_dict(),
    )


@pytest.fixture
def populated(open_db: Callable[..., peregrine.Database]
              ) -> tuple[peregrine.Database, peregrine.Collection, tuple[Any, ...]]:
    db = open_db()
    c = db.create_collection("c", DIM, "cosine", index={"segment_rows": 64})
    c.create_payload_index("g", "integer")
    rng = np.random.default_rng(0)
    c.upsert(list(range(20)), rng.standard_normal((20, DIM)), [{"g": i % 3} for i in range(20)])
    c.optimize()
    # an unsealed tail of fresh ids
    c.upsert([100, 101, U1], rng.standard_normal((3, DIM)), [{"g": 9}, None, {"s": "x"}])
    return db, c, _state(c)


def _reopened_state(db: peregrine.Database, open_db: Callable[..., peregrine.Database]
                    ) -> tuple[Any, ...]:
    db.close()
    return _state(open_db().collection("c"))


def vec_rows(n: int) -> list[list[float]]:
    return [OK_VEC] * n


# (label, call, exception) for calls on the populated collection
BAD_UPSERTS: list[tuple[str, Callable[[peregrine.Collection], Any], type[Exception]]] = [
    # --- vectors
    ("dim too small", lambda c: c.upsert([1], [[0.1] * (DIM - 1)]), DimensionMismatchError),
    ("dim too large", lambda c: c.upsert([1], [[0.1] * (DIM + 1)]), DimensionMismatchError),
    ("dim wrong in batch", lambda c: c.upsert([1, 2], np.ones((2, DIM + 3))),
     DimensionMismatchError),
    ("flat list for two ids", lambda c: c.upsert([1, 2], [0.1] * (2 * DIM)),
     DimensionMismatchError),
    ("3-d array", lambda c: c.upsert([1], np.ones((1, 2, DIM))), InvalidVectorError),
    ("empty vector", lambda c: c.upsert([1], [[]]), DimensionMismatchError),
    ("nan", lambda c: c.upsert([1], [[math.nan] + [0.1] * (DIM - 1)]), InvalidVectorError),
    ("inf", lambda c: c.upsert([1], [[math.inf] + [0.1] * (DIM - 1)]), InvalidVectorError),
    ("-inf in 2nd row", lambda c: c.upsert([1, 2], [OK_VEC, [0.1] * (DIM - 1) + [-math.inf]]),
     InvalidVectorError),
    ("overflows float32", lambda c: c.upsert([1], [[1e39] * DIM]), InvalidVectorError),
    ("nan float32 array", lambda c: c.upsert([1], np.full((1, DIM), np.nan, np.float32)),
     InvalidVectorError),
    ("strings", lambda c: c.upsert([1], [["a"] * DIM]), InvalidVectorError),
    ("numeric strings", lambda c: c.upsert([1], [["1.0"] * DIM]), InvalidVectorError),
    ("bools", lambda c: c.upsert([1], [[True] * DIM]), InvalidVectorError),
    ("complex", lambda c: c.upsert([1], [[1j] * DIM]), InvalidVectorError),
    ("None vector", lambda c: c.upsert([1], None), InvalidInputError),
    ("None components (2-d)", lambda c: c.upsert([1], [[None] * DIM]), InvalidVectorError),
    ("None components (1-d)", lambda c: c.upsert([1], [None] * DIM), InvalidInputError),
    ("ragged", lambda c: c.upsert([1, 2], [OK_VEC, [0.1] * (DIM - 1)]), InvalidInputError),
    ("dict as vector", lambda c: c.upsert([1], [{"a": 1}]), InvalidInputError),
    # --- ids
    ("negative id", lambda c: c.upsert([-1], vec_rows(1)), InvalidPointIdError),
    ("negative id among valid", lambda c: c.upsert([5, -1], vec_rows(2)), InvalidPointIdError),
    ("id 2**64", lambda c: c.upsert([2**64], vec_rows(1)), InvalidPointIdError),
    ("id 2**64 among uuids", lambda c: c.upsert([U1, 2**64], vec_rows(2)), InvalidPointIdError),
    ("negative numpy id", lambda c: c.upsert(np.array([3, -2]), vec_rows(2)),
     InvalidPointIdError),
    ("float id", lambda c: c.upsert([1.0], vec_rows(1)), InvalidPointIdError),
    ("numpy float ids", lambda c: c.upsert(np.array([1.0, 2.0]), vec_rows(2)),
     InvalidPointIdError),
    ("bool id", lambda c: c.upsert([True], vec_rows(1)), InvalidPointIdError),
    ("bool among ints", lambda c: c.upsert([7, False], vec_rows(2)), InvalidPointIdError),
    ("bad uuid", lambda c: c.upsert(["not-a-uuid"], vec_rows(1)), InvalidPointIdError),
    ("numeric string id", lambda c: c.upsert(["5"], vec_rows(1)), InvalidPointIdError),
    ("empty string id", lambda c: c.upsert([""], vec_rows(1)), InvalidPointIdError),
    ("uuid too long", lambda c: c.upsert([U1 + "0"], vec_rows(1)), InvalidPointIdError),
    ("None id", lambda c: c.upsert([None], vec_rows(1)), InvalidPointIdError),
    ("bytes id", lambda c: c.upsert([b"\x01" * 16], vec_rows(1)), InvalidPointIdError),
    ("nested id", lambda c: c.upsert([[1]], vec_rows(1)), InvalidPointIdError),
    ("2-d id array", lambda c: c.upsert(np.array([[1, 2]]), vec_rows(2)), InvalidPointIdError),
    ("duplicate ids", lambda c: c.upsert([1, 2, 1], vec_rows(3)), DuplicateIdError),
    ("duplicate uuid spellings", lambda c: c.upsert([U1, U1.upper()], vec_rows(2)),
     DuplicateIdError),
    ("duplicate int/np.uint64", lambda c: c.upsert([5, np.uint64(5)], vec_rows(2)),
     DuplicateIdError),
    ("more vectors than ids", lambda c: c.upsert([1, 2], vec_rows(3)), InvalidInputError),
    ("more ids than vectors", lambda c: c.upsert([1, 2, 3], vec_rows(2)), InvalidInputError),
    ("ids but no vectors", lambda c: c.upsert([1], []), InvalidInputError),
    # --- payloads
    ("payloads is a dict", lambda c: c.upsert([1], vec_rows(1), {"a": 1}), InvalidPayloadError),
    ("payloads too short", lambda c: c.upsert([1, 2], vec_rows(2), [{"a": 1}]),
     InvalidPayloadError),
    ("payloads too long", lambda c: c.upsert([1], vec_rows(1), [{}, {}]), InvalidPayloadError),
    ("payloads generator", lambda c: c.upsert([1], vec_rows(1), ({} for _ in range(1))),
     InvalidPayloadError),
    ("payload is a list", lambda c: c.upsert([1], vec_rows(1), [[1, 2]]), InvalidPayloadError),
    ("payload is a string", lambda c: c.upsert([1], vec_rows(1), ['{"a": 1}']),
     InvalidPayloadError),
    ("payload is an int", lambda c: c.upsert([1], vec_rows(1), [3]), InvalidPayloadError),
    ("2nd payload not JSON", lambda c: c.upsert([1, 2], vec_rows(2), [{}, {"s": {1, 2}}]),
     InvalidPayloadError),
    ("payload with object", lambda c: c.upsert([1], vec_rows(1), [{"o": object()}]),
     InvalidPayloadError),
    ("payload with bytes", lambda c: c.upsert([1], vec_rows(1), [{"b": b"x"}]),
     InvalidPayloadError),
    ("payload int > 64 bits", lambda c: c.upsert([1], vec_rows(1), [{"n": 2**70}]),
     InvalidPayloadError),
    ("payload non-str key", lambda c: c.upsert([1], vec_rows(1), [{1: "a"}]),
     InvalidPayloadError),
    ("payload numpy scalar", lambda c: c.upsert([1], vec_rows(1), [{"n": np.int64(3)}]),
     InvalidPayloadError),
]

BAD_FILTERS: list[tuple[str, Any]] = [
    ("string", "must"),
    ("list", [{"key": "g", "match": {"value": 1}}]),
    ("unknown top-level key", {"mustnt": []}),
    ("unknown key next to must", {"must": [], "filter": 1}),
    ("must is a string", {"must": "g"}),
    ("must holds a number", {"must": [1]}),
    ("must holds a list", {"must": [[{"key": "g", "match": {"value": 1}}]]}),
    ("condition without match/range", {"must": [{"key": "g"}]}),
    ("condition with is_empty not a bool", {"must": [{"key": "g", "is_empty": 1}]}),
    ("values_count not a count", {"must": [{"key": "g", "values_count": {"gt": 1.5}}]}),
    ("values_count empty", {"must": [{"key": "g", "values_count": {}}]}),
    ("key with an empty step", {"must": [{"key": "a..b", "match": {"value": 1}}]}),
    ("key with a bad index", {"must": [{"key": "a[x]", "match": {"value": 1}}]}),
    ("key starting with a bracket", {"must": [{"key": "[]", "match": {"value": 1}}]}),
    ("unknown condition", {"must": [{"geo_radius": {"key": "g"}}]}),
    ("key not a string", {"must": [{"key": 1, "match": {"value": 1}}]}),
    ("empty key", {"must": [{"key": "", "match": {"value": 1}}]}),
    ("match with two kinds", {"must": [{"key": "g", "match": {"value": 1, "any": [1]}}]}),
    ("match empty", {"must": [{"key": "g", "match": {}}]}),
    ("match not an object", {"must": [{"key": "g", "match": 1}]}),
    ("unknown match kind", {"must": [{"key": "g", "match": {"regex": "a.*"}}]}),
    ("match value float", {"must": [{"key": "g", "match": {"value": 1.5}}]}),
    ("match value list", {"must": [{"key": "g", "match": {"value": [1]}}]}),
    ("match value null", {"must": [{"key": "g", "match": {"value": None}}]}),
    ("match value object", {"must": [{"key": "g", "match": {"value": {"a": 1}}}]}),
    ("match any not a list", {"must": [{"key": "g", "match": {"any": 1}}]}),
    ("match any with float", {"must": [{"key": "g", "match": {"any": [1, 2.5]}}]}),
    ("match except with object", {"must": [{"key": "g", "match": {"except": [{}]}}]}),
    ("match text not a string", {"must": [{"key": "g", "match": {"text": 1}}]}),
    ("range with string", {"must": [{"key": "g", "range": {"gt": "1"}}]}),
    ("range with bool", {"must": [{"key": "g", "range": {"lt": True}}]}),
    ("range with nan", {"must": [{"key": "g", "range": {"lt": math.nan}}]}),
    ("range with list", {"must": [{"key": "g", "range": {"lt": [1]}}]}),
    ("range unknown bound", {"must": [{"key": "g", "range": {"gt": 1, "between": 2}}]}),
    ("range empty", {"must": [{"key": "g", "range": {}}]}),
    ("range not an object", {"must": [{"key": "g", "range": 5}]}),
    ("has_id not a list", {"must": [{"has_id": 1}]}),
    ("has_id bad id", {"must": [{"has_id": [1, -5]}]}),
    ("has_id bad uuid", {"must": [{"has_id": ["zzz"]}]}),
    ("has_id with extra key", {"must": [{"has_id": [1], "key": "g"}]}),
    ("is_empty without key", {"must": [{"is_empty": {}}]}),
    ("is_empty key not a string", {"must": [{"is_empty": {"key": 3}}]}),
    ("is_null not an object", {"must": [{"is_null": "g"}]}),
    ("min_should without min_count", {"min_should": {"conditions": []}}),
    ("min_should min_count string",
     {"min_should": {"conditions": [], "min_count": "1"}}),
    ("min_should unknown key",
     {"min_should": {"conditions": [], "min_count": 1, "max": 2}}),
    ("min_should not an object", {"min_should": [1]}),
    ("deeply nested bad condition",
     {"should": [{"must": [{"must_not": [{"key": "g", "range": {"gt": "x"}}]}]}]}),
]


@pytest.mark.parametrize(("label", "call", "exc"), BAD_UPSERTS, ids=[b[0] for b in BAD_UPSERTS])
def test_bad_upsert_changes_nothing(populated: Any, open_db: Any, label: str,
                                    call: Callable[[peregrine.Collection], Any],
                                    exc: type[Exception]) -> None:
    db, c, before = populated
    with pytest.raises(exc):
        call(c)
    assert _state(c) == before
    c.upsert([555], [OK_VEC], [{"after": label}])  # the collection still works
    assert c.retrieve([555])[0].payload == {"after": label}
    c.delete(ids=[555])
    after = _reopened_state(db, open_db)
    assert after[:3] == before[:3]


@pytest.mark.parametrize(("label", "flt"), BAD_FILTERS, ids=[b[0] for b in BAD_FILTERS])
def test_bad_filter_is_rejected_everywhere(populated: Any, label: str, flt: Any) -> None:
    _, c, before = populated
    for call in (lambda: c.count(flt), lambda: c.search(Q, k=3, filter=flt),
                 lambda: c.search_batch([Q], k=3, filter=flt), lambda: c.scroll(filter=flt),
                 lambda: c.delete(filter=flt)):
        with pytest.raises(InvalidFilterError):
            call()
    assert _state(c) == before


@pytest.mark.parametrize("flt", [{"must": 0}, {"should": ""}, {"must_not": False}],
                         ids=["must-0", "should-empty-string", "must_not-False"])
def test_falsy_non_list_clause_is_rejected(populated: Any, flt: Any) -> None:
    _, c, before = populated
    with pytest.raises(InvalidFilterError):
        c.delete(filter=flt)
    assert _state(c) == before


BAD_CALLS: list[tuple[str, Callable[[peregrine.Collection], Any], type[Exception]]] = [
    # search parameters
    ("k=0", lambda c: c.search(Q, k=0), InvalidInputError),
    ("k<0", lambda c: c.search(Q, k=-3), InvalidInputError),
    ("k float", lambda c: c.search(Q, k=2.5), InvalidInputError),
    ("k bool", lambda c: c.search(Q, k=True), InvalidInputError),
    ("k str", lambda c: c.search(Q, k="3"), InvalidInputError),
    ("k None", lambda c: c.search(Q, k=None), InvalidInputError),
    ("batch k=0", lambda c: c.search_batch([Q], k=0), InvalidInputError),
    ("ef=0", lambda c: c.search(Q, k=3, ef=0), InvalidInputError),
    ("ef<0", lambda c: c.search(Q, k=3, ef=-1), InvalidInputError),
    ("ef float", lambda c: c.search(Q, k=3, ef=10.0), InvalidInputError),
    ("ef bool", lambda c: c.search(Q, k=3, ef=True), InvalidInputError),
    ("offset<0", lambda c: c.search(Q, k=3, offset=-1), InvalidInputError),
    ("offset float", lambda c: c.search(Q, k=3, offset=1.0), InvalidInputError),
    ("query wrong dim", lambda c: c.search([0.1] * (DIM + 1), k=3), DimensionMismatchError),
    ("query float32 wrong dim", lambda c: c.search(np.ones(DIM - 1, np.float32), k=3),
     DimensionMismatchError),
    ("query nan", lambda c: c.search([math.nan] * DIM, k=3), InvalidVectorError),
    ("query nan float32", lambda c: c.search(np.full(DIM, np.nan, np.float32), k=3),
     InvalidVectorError),
    ("query inf float32", lambda c: c.search(np.full(DIM, np.inf, np.float32), k=3),
     InvalidVectorError),
    ("query strings", lambda c: c.search(["x"] * DIM, k=3), InvalidVectorError),
    ("two queries to search", lambda c: c.search(np.ones((2, DIM)), k=3), InvalidInputError),
    ("batch wrong dim", lambda c: c.search_batch(np.ones((2, DIM + 1)), k=3),
     DimensionMismatchError),
    # scroll / retrieve / delete / count
    ("scroll limit 0", lambda c: c.scroll(limit=0), InvalidInputError),
    ("scroll limit <0", lambda c: c.scroll(limit=-1), InvalidInputError),
    ("scroll limit float", lambda c: c.scroll(limit=2.0), InvalidInputError),
    ("scroll limit bool", lambda c: c.scroll(limit=True), InvalidInputError),
    ("scroll limit None", lambda c: c.scroll(limit=None), InvalidInputError),
    ("scroll bad offset", lambda c: c.scroll(offset=-1), InvalidPointIdError),
    ("scroll bad uuid offset", lambda c: c.scroll(offset="nope"), InvalidPointIdError),
    ("retrieve bad id", lambda c: c.retrieve([1, -1]), InvalidPointIdError),
    ("retrieve float id", lambda c: c.retrieve([1.5]), InvalidPointIdError),
    ("delete nothing", lambda c: c.delete(), InvalidInputError),
    ("delete both", lambda c: c.delete(ids=[1], filter={"must": []}), InvalidInputError),
    ("delete bad id", lambda c: c.delete(ids=[1, 2**64]), InvalidPointIdError),
    ("delete bad uuid", lambda c: c.delete(ids=["x"]), InvalidPointIdError),
    # payload edits
    ("set_payload list", lambda c: c.set_payload([1], [1, 2]), InvalidPayloadError),
    ("set_payload str", lambda c: c.set_payload([1], "a"), InvalidPayloadError),
    ("set_payload unserialisable", lambda c: c.set_payload([1], {"x": {1}}),
     InvalidPayloadError),
    ("set_payload bad id", lambda c: c.set_payload([-1], {"a": 1}), InvalidPointIdError),
    ("delete_payload bad id", lambda c: c.delete_payload(["q"], ["g"]), InvalidPointIdError),
    ("clear_payload bad id", lambda c: c.clear_payload([1.5]), InvalidPointIdError),
    # payload indexes
    ("index type", lambda c: c.create_payload_index("g", "ngram"), InvalidInputError),
    ("index field empty", lambda c: c.create_payload_index("", "keyword"), InvalidInputError),
    ("index field int", lambda c: c.create_payload_index(3, "keyword"), InvalidInputError),
]


@pytest.mark.parametrize(("label", "call", "exc"), BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
def test_bad_call_changes_nothing(populated: Any, label: str,
                                  call: Callable[[peregrine.Collection], Any],
                                  exc: type[Exception]) -> None:
    _, c, before = populated
    with pytest.raises(exc):
        call(c)
    assert _state(c) == before


def test_all_rejections_survive_reopen(populated: Any, open_db: Any) -> None:
    """Run every rejected call on one collection, then reopen: still identical."""
    db, c, before = populated
    for _, call, exc in BAD_UPSERTS + BAD_CALLS:
        with pytest.raises(exc):
            call(c)
    for _, flt in BAD_FILTERS:
        with pytest.raises(InvalidFilterError):
            c.delete(filter=flt)
    assert _state(c) == before
    assert _reopened_state(db, open_db) == before


BAD_NAMES = ["", ".", "..", ".hidden", "a/b", "../x", "a b", "tab\t", "é", "a" * 256, "-x",
             "x\x00", None, 123, b"abc"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n)[:20] for n in BAD_NAMES])
def test_invalid_collection_names(db: peregrine.Database, name: Any) -> None:
    db.create_collection("keep", 4)
    entries = sorted(p.name for p in (db.path / "collections").iterdir())
    with pytest.raises(InvalidInputError):
        db.create_collection(name, 4)
    with pytest.raises((InvalidInputError, CollectionNotFoundError)):
        db.collection(name)
    assert db.list_collections() == ["keep"]
    assert sorted(p.name for p in (db.path / "collections").iterdir()) == entries


BAD_CREATES: list[tuple[str, dict[str, Any]]] = [
    ("dim 0", {"dim": 0}),
    ("dim negative", {"dim": -4}),
    ("dim float", {"dim": 4.0}),
    ("dim bool", {"dim": True}),
    ("dim str", {"dim": "4"}),
    ("dim huge", {"dim": 65537}),
    ("metric unknown", {"metric": "cosinus"}),
    ("metric None", {"metric": None}),
    ("index not a dict", {"index": "hnsw"}),
    ("index unknown key", {"index": {"M": 16}}),
    ("index m too small", {"index": {"m": 1}}),
    ("index m float", {"index": {"m": 16.0}}),
    ("index ef 0", {"index": {"ef": 0}}),
    ("index ef_construction str", {"index": {"ef_construction": "100"}}),
    ("index quantization", {"index": {"quantization": "int4"}}),
    ("index segment_rows small", {"index": {"segment_rows": 8}}),
    ("index max_segments 0", {"index": {"max_segments": 0}}),
    ("index rescore_factor bool", {"index": {"rescore_factor": True}}),
    ("index full_scan_threshold negative", {"index": {"full_scan_threshold": -1}}),
]


@pytest.mark.parametrize(("label", "kwargs"), BAD_CREATES, ids=[b[0] for b in BAD_CREATES])
def test_bad_create_collection(db: peregrine.Database, label: str,
                               kwargs: dict[str, Any]) -> None:
    args = {"name": "c", "dim": 4, **kwargs}
    with pytest.raises(InvalidInputError):
        db.create_collection(**args)
    assert db.list_collections() == []
    assert list((db.path / "collections").iterdir()) == []


def test_duplicate_and_unknown_collections(populated: Any) -> None:
    db, c, before = populated
    with pytest.raises(AlreadyExistsError):
        db.create_collection("c", 4, "dot")
    for call in (lambda: db.collection("nope"), lambda: db.drop_collection("nope")):
        with pytest.raises(CollectionNotFoundError):
            call()
    with pytest.raises(KeyError):  # NotFoundError is also a KeyError
        db.collection("nope")
    assert db.list_collections() == ["c"] and _state(c) == before


def test_bad_snapshots_change_nothing(populated: Any, open_db: Any, tmp_path: Path) -> None:
    db, c, before = populated
    garbage = tmp_path / "garbage.snap"
    garbage.write_bytes(b"this is not a tar file" * 10)
    not_a_collection = tmp_path / "empty.snap"
    import tarfile

    with tarfile.open(not_a_collection, "w"):
        pass
    for path in (tmp_path / "missing.snap", tmp_path):
        with pytest.raises(InvalidInputError):
            c.restore(path)
        with pytest.raises(InvalidInputError):
            db.restore_collection(path, "new")
    for path in (garbage, not_a_collection):  # the caller's file is bad: input error
        with pytest.raises(InvalidSnapshotError):
            c.restore(path)
        with pytest.raises(InvalidSnapshotError):
            db.restore_collection(path, "new")
    with pytest.raises(InvalidInputError):
        db.restore_collection(c.snapshot(tmp_path / "ok.snap"), "bad/name")
    assert db.list_collections() == ["c"]
    assert _state(c) == before
    assert not any(p.name.startswith(".") for p in (db.path / "collections").iterdir())
    assert _reopened_state(db, open_db)[:3] == before[:3]


@pytest.mark.parametrize("kwargs", [
    {"fsync": "sometimes"}, {"fsync": None}, {"fsync_interval_ms": 0},
    {"fsync_interval_ms": -5}, {"fsync_interval_ms": 2.5}, {"fsync_interval_ms": True},
], ids=lambda kw: repr(kw))
def test_bad_open_arguments(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    path = tmp_path / "never"
    with pytest.raises(InvalidInputError):
        peregrine.open(path, **kwargs)
    assert not path.exists()


# ---- bad inputs that once escaped the typed errors ----
@pytest.mark.parametrize("call", ["upsert", "retrieve", "delete"])
def test_scalar_id_is_a_typed_error(populated: Any, call: str) -> None:
    _, c, before = populated
    with pytest.raises(InvalidInputError):
        {"upsert": lambda: c.upsert(7, OK_VEC), "retrieve": lambda: c.retrieve(7),
         "delete": lambda: c.delete(ids=7)}[call]()
    assert _state(c) == before


def test_set_payload_none_is_a_typed_error(populated: Any) -> None:
    _, c, before = populated
    with pytest.raises(InvalidPayloadError):
        c.set_payload([1], None)
    assert _state(c) == before


def test_score_threshold_type_is_validated(populated: Any) -> None:
    _, c, _ = populated
    with pytest.raises(InvalidInputError):
        c.search(Q, k=3, score_threshold="0.5")


@pytest.mark.parametrize("vector", [[None] * DIM, [1.0, None] + [1.0] * (DIM - 2)],
                         ids=["all-None", "one-None"])
def test_none_component_is_invalid_vector(populated: Any, vector: list[Any]) -> None:
    _, c, _ = populated
    with pytest.raises(InvalidVectorError):
        c.upsert([1], vector)


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
def test_non_finite_payload_value_is_rejected(populated: Any, value: float) -> None:
    _, c, before = populated
    with pytest.raises(InvalidPayloadError):
        c.upsert([1], [OK_VEC], [{"x": value}])
    assert _state(c) == before


def test_delete_payload_with_a_string_key(db: peregrine.Database) -> None:
    c = db.create_collection("c", 2, "dot")
    c.upsert([1], [[1, 0]], [{"a": 1, "b": 2, "ab": 3}])
    with contextlib.suppress(InvalidInputError):
        c.delete_payload([1], "ab")
    assert c.retrieve([1])[0].payload in ({"a": 1, "b": 2}, {"a": 1, "b": 2, "ab": 3})


def test_uuid_objects_and_spellings_are_the_same_point(db: peregrine.Database) -> None:
    c = db.create_collection("c", 2, "dot")
    u = uuid.UUID(U1)
    c.upsert([u], [[1, 0]])
    c.upsert([U1.upper()], [[0, 1]], [{"v": 2}])
    c.upsert(["{" + U1 + "}"], [[1, 1]], [{"v": 3}])
    assert c.count() == 1
    assert c.retrieve([U1.replace("-", "")])[0].payload == {"v": 3}


def test_collection_name_with_trailing_newline(db: peregrine.Database) -> None:
    with pytest.raises(InvalidInputError):
        db.create_collection("abc\n", 4)
    assert db.list_collections() == []
