"""Collection behaviour: CRUD per metric against numpy, paging, payload edits,
persistence, snapshots, catalogue, quantisation and the database lock."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from vutil import (
    METRICS,
    assert_same_points,
    check_topk,
    dump,
    higher_is_better,
    id_sort_key,
    oracle_scores,
    scores,
    stored_vector,
    tie_aware_recall,
)

import peregrine

DIM = 16


def _uuid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16)))


def _mixed_ids(rng: np.random.Generator, n_int: int, n_uuid: int) -> list[Any]:
    ints = rng.choice(10**12, size=n_int, replace=False).tolist()
    ids: list[Any] = [*ints, *(_uuid(rng) for _ in range(n_uuid))]
    rng.shuffle(ids)  # type: ignore[arg-type]
    return ids


class Model:
    """In-memory oracle of a collection: id -> (stored vector, payload)."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.points: dict[Any, tuple[np.ndarray, Any]] = {}

    def upsert(self, ids: list[Any], vectors: np.ndarray,
               payloads: list[Any] | None = None) -> None:
        for i, pid in enumerate(ids):
            self.points[pid] = (stored_vector(self.metric, vectors[i]),
                                None if payloads is None else payloads[i])

    def delete(self, ids: list[Any]) -> None:
        for pid in ids:
            self.points.pop(pid, None)

    def vectors(self, ids: Any = None) -> dict[Any, np.ndarray]:
        return {k: v for k, (v, _) in self.points.items() if ids is None or k in ids}

    def expected_dump(self) -> dict[Any, tuple[Any, Any]]:
        return {k: (p, v) for k, (v, p) in self.points.items()}


def _populate(c: peregrine.Collection, model: Model, rng: np.random.Generator, state: str,
              n: int = 300) -> None:
    """Fill a collection into one of three segment layouts."""
    ids = _mixed_ids(rng, n - n // 5, n // 5)
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    payloads = [{"i": i, "even": i % 2 == 0} for i in range(n)]
    half = n // 2
    c.upsert(ids[:half], vecs[:half], payloads[:half])
    model.upsert(ids[:half], vecs[:half], payloads[:half])
    if state in ("sealed", "mixed"):
        c.optimize()
    c.upsert(ids[half:], vecs[half:], payloads[half:])
    model.upsert(ids[half:], vecs[half:], payloads[half:])
    if state == "sealed":
        c.optimize()
    if state == "mixed":
        # overwrites of sealed and unsealed points, and deletes of both
        over = [ids[3], ids[half + 3], ids[10], ids[half + 10]]
        new = rng.standard_normal((len(over), DIM)).astype(np.float32)
        c.upsert(over, new, [{"over": True}] * len(over))
        model.upsert(over, new, [{"over": True}] * len(over))
        gone = [ids[5], ids[half + 5], ids[7]]
        assert c.delete(ids=gone) == 3
        model.delete(gone)


@pytest.mark.parametrize("state", ["unsealed", "sealed", "mixed"])
@pytest.mark.parametrize("metric", METRICS)
def test_search_matches_numpy(db: peregrine.Database, metric: str, state: str) -> None:
    c = db.create_collection("c", DIM, metric, index={"segment_rows": 64, "max_segments": 2})
    rng = np.random.default_rng([METRICS.index(metric), len(state)])
    model = Model(metric)
    _populate(c, model, rng, state)
    info = c.info()
    if state == "sealed":
        assert info.sealed_segments == 1 and info.unindexed_points == 0
    else:
        assert info.unindexed_points > 64  # frozen, never-sealed segments take part
    assert c.count() == len(model.points) == info.points
    assert_same_points(dump(c), model.expected_dump(), atol=1e-5)

    good = wanted = 0
    for _ in range(8):
        q = rng.standard_normal(DIM).astype(np.float32)
        oracle = oracle_scores(metric, q, model.vectors())
        check_topk(c.search(q, k=10, exact=True), oracle, 10, metric)
        ann = c.search(q, k=10)
        ids = [h.id for h in ann]
        assert len(ids) == len(set(ids)) == 10
        for h in ann:  # approximate *ranking*, but exact scores for what it returns
            assert abs(h.score - oracle[h.id]) <= 1e-3
        signed = [h.score if higher_is_better(metric) else -h.score for h in ann]
        assert signed == sorted(signed, reverse=True)
        g, w = tie_aware_recall(ann, oracle, 10, metric)
        good, wanted = good + g, wanted + w
        # a large k returns every live point exactly once
        everything = c.search(q, k=1000, exact=True, with_payload=False)
        assert {h.id for h in everything} == set(model.points)
    assert good / wanted >= 0.9


def test_scores_are_the_metric_definitions(db: peregrine.Database) -> None:
    """Hand-computed values, so a wrong sign or a squared distance cannot hide."""
    vecs = [[3.0, 4.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]
    q = [0.0, 4.0, 0.0, 3.0]
    expect = {
        "cosine": {1: 16 / 25, 2: 0.0},
        "dot": {1: 16.0, 2: 0.0},
        "l2": {1: np.sqrt(9 + 0 + 0 + 9), 2: np.sqrt(1 + 16 + 9)},
        "l1": {1: 3 + 0 + 0 + 3, 2: 1 + 4 + 0 + 3},
    }
    for metric, want in expect.items():
        c = db.create_collection(metric, 4, metric)
        c.upsert([1, 2], vecs)
        for seal in (False, True):
            if seal:
                c.optimize()
            for exact in (True, False):
                hits = c.search(q, k=2, exact=exact)
                got = {h.id: h.score for h in hits}
                assert got == pytest.approx(want, abs=1e-5), (metric, seal, exact)
                assert [h.id for h in hits] == [1, 2]  # l2: ascending distance


@pytest.mark.parametrize("seal_first", [False, True])
def test_upsert_overwrites_vector_and_payload(db: peregrine.Database, seal_first: bool) -> None:
    c = db.create_collection("c", 8, "cosine", index={"segment_rows": 16})
    rng = np.random.default_rng(1)
    old = rng.standard_normal((40, 8)).astype(np.float32)
    c.upsert(list(range(40)), old, [{"v": 1, "i": i} for i in range(40)])
    if seal_first:
        c.optimize()
    new = rng.standard_normal((3, 8)).astype(np.float32)
    c.upsert([3, 7, 39], new, [{"v": 2}, {"v": 2}, None])
    assert c.count() == 40
    recs = c.retrieve([3, 7, 39], with_vectors=True)
    assert [r.payload for r in recs] == [{"v": 2}, {"v": 2}, {}]  # no payload reads as {}
    for r, v in zip(recs, new, strict=True):
        np.testing.assert_allclose(r.vector, stored_vector("cosine", v), atol=1e-6)
    # searching with the new vector finds it at score 1; the old version is gone
    for pid, vec in zip([3, 7, 39], new, strict=True):
        hits = c.search(vec, k=40, exact=True)
        assert hits[0].id == pid and hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert [h.id for h in hits].count(pid) == 1
    hits = c.search(old[3], k=40, exact=True)
    assert [h.id for h in hits].count(3) == 1
    assert next(h.score for h in hits if h.id == 3) < 0.999
    assert c.count({"must": [{"key": "v", "match": {"value": 1}}]}) == 37
    c.optimize()
    assert c.count() == 40 and c.info().sealed_segments == 1
    assert [r.payload for r in c.retrieve([3, 7, 39])] == [{"v": 2}, {"v": 2}, {}]
    # overwrite the same id many times: still one point
    for v in range(5):
        c.upsert([3], [[float(v + 1)] * 8], [{"v": 10 + v}])
    assert c.count() == 40
    assert c.retrieve([3])[0].payload == {"v": 14}


def test_delete_by_ids_and_filter(db: peregrine.Database) -> None:
    c = db.create_collection("c", 8, "dot", index={"segment_rows": 32})
    rng = np.random.default_rng(2)
    vecs = rng.standard_normal((150, 8)).astype(np.float32)
    c.upsert(list(range(100)), vecs[:100], [{"g": i % 4} for i in range(100)])
    c.optimize()
    c.upsert(list(range(100, 150)), vecs[100:], [{"g": i % 4} for i in range(100, 150)])
    live = set(range(150))

    assert c.delete(ids=[1, 2, 120, 10**9]) == 3  # missing ids are ignored
    live -= {1, 2, 120}
    assert c.delete(ids=[1, 120]) == 0
    assert c.delete(ids=[]) == 0
    g0 = {i for i in live if i % 4 == 0}
    assert c.delete(filter={"must": [{"key": "g", "match": {"value": 0}}]}) == len(g0)
    live -= g0
    assert c.delete(filter={"must": [{"key": "g", "match": {"value": 0}}]}) == 0

    def check() -> None:
        assert c.count() == len(live)
        assert c.count({"must": [{"key": "g", "match": {"value": 0}}]}) == 0
        assert set(dump(c)) == live
        hits = c.search(rng.standard_normal(8), k=500, exact=True)
        assert {h.id for h in hits} == live
        assert {h.id for h in c.search(rng.standard_normal(8), k=500)} <= live
        assert c.retrieve([1, 2, 120, 0, 4]) == []

    check()
    c.optimize()
    check()
    # a deleted id can come back
    c.upsert([1], [vecs[1]], [{"g": 1, "back": True}])
    live.add(1)
    assert c.retrieve([1])[0].payload == {"g": 1, "back": True}
    assert c.count() == len(live)


def test_retrieve_order_missing_and_options(db: peregrine.Database) -> None:
    c = db.create_collection("c", 4, "l2", index={"segment_rows": 16})
    u = "8C9D4B36-7E7A-4C1B-9A53-0D5F1E2A3B4C"
    ids: list[Any] = [0, 5, 2**64 - 1, u, 17]
    vecs = np.arange(20, dtype=np.float32).reshape(5, 4)
    c.upsert(ids, vecs, [{"a": 1, "b": i} for i in range(5)])
    c.optimize()
    c.upsert([99], [[1, 2, 3, 4]], [{"late": True}])
    asked = [17, 12345, u.lower(), 99, 0, 2**64 - 1, 5]
    recs = c.retrieve(asked, with_vectors=True)
    assert [r.id for r in recs] == [17, u.lower(), 99, 0, 2**64 - 1, 5]
    assert recs[1].vector == [12.0, 13.0, 14.0, 15.0]
    assert recs[2].payload == {"late": True}
    assert c.retrieve([uuid.UUID(u)])[0].id == u.lower()  # UUID objects are accepted
    assert c.retrieve([5], with_payload=False)[0].payload is None
    assert c.retrieve([5])[0].vector is None
    assert c.retrieve([5], with_payload=["b", "zz"])[0].payload == {"b": 1}
    assert c.retrieve([]) == []
    # int 5 and the UUID whose integer value is 5 are different points
    assert c.retrieve(["00000000-0000-0000-0000-000000000005"]) == []


@pytest.mark.parametrize("page", [1, 7, 64, 1000])
def test_scroll_covers_every_point_once_in_id_order(db: peregrine.Database, page: int) -> None:
    c = db.create_collection("c", 4, "dot", index={"segment_rows": 32})
    rng = np.random.default_rng(3)
    ids = [*_mixed_ids(rng, 90, 40), 0, 2**64 - 1, "00000000-0000-0000-0000-000000000000",
           "ffffffff-ffff-ffff-ffff-ffffffffffff"]
    vecs = rng.standard_normal((len(ids), 4))
    payloads = [{"odd": i % 2 == 1} for i in range(len(ids))]
    c.upsert(ids[:60], vecs[:60], payloads[:60])
    c.optimize()
    c.upsert(ids[60:], vecs[60:], payloads[60:])
    c.delete(ids=ids[::9])
    c.upsert(ids[1:20:3], vecs[1:20:3], payloads[1:20:3])  # overwrites: still once each
    live = [i for n, i in enumerate(ids) if n % 9 != 0]
    want = sorted(live, key=id_sort_key)

    for flt, expect in [
        (None, want),
        ({"must": [{"key": "odd", "match": {"value": True}}]},
         [i for i in want if ids.index(i) % 2 == 1]),
    ]:
        got: list[Any] = []
        offset = None
        pages = 0
        while True:
            recs, offset = c.scroll(filter=flt, limit=page, offset=offset)
            assert len(recs) <= page
            got += [r.id for r in recs]
            pages += 1
            if offset is None:
                break
            assert recs and len(recs) == page
            assert id_sort_key(offset) > id_sort_key(recs[-1].id)
        assert got == expect
        assert pages == max(1, -(-len(expect) // page))

    # offset is inclusive, and need not be an existing id
    recs, _ = c.scroll(limit=3, offset=want[10])
    assert [r.id for r in recs] == want[10:13]
    gap = want[10] + 1 if isinstance(want[10], int) and want[10] + 1 not in live else None
    if gap is not None:
        recs, _ = c.scroll(limit=2, offset=gap)
        assert [r.id for r in recs] == want[11:13]
    assert c.scroll(limit=5, offset="ffffffff-ffff-ffff-ffff-ffffffffffff")[0][0].id == want[-1]


def test_count_with_and_without_filter(db: peregrine.Database) -> None:
    c = db.create_collection("c", 4, "dot", index={"segment_rows": 16})
    c.upsert(list(range(50)), np.ones((50, 4)), [{"k": i % 5} for i in range(50)])
    c.optimize()
    c.upsert(list(range(50, 60)), np.ones((10, 4)), [{"k": 7}] * 10)
    assert c.count() == len(c) == 60
    assert c.count({"must": [{"key": "k", "match": {"any": [0, 7]}}]}) == 20
    assert c.count({"must_not": [{"key": "k", "match": {"value": 7}}]}) == 50
    assert c.count({}) == 60
    c.delete(ids=[0, 5, 55])
    assert c.count({"must": [{"key": "k", "match": {"any": [0, 7]}}]}) == 17


@pytest.mark.parametrize("exact", [True, False])
def test_search_batch_equals_repeated_search(db: peregrine.Database, exact: bool) -> None:
    c = db.create_collection("c", DIM, "cosine", index={"segment_rows": 64})
    rng = np.random.default_rng(4)
    model = Model("cosine")
    _populate(c, model, rng, "mixed", n=200)
    queries = rng.standard_normal((6, DIM)).astype(np.float32)
    flt = {"must": [{"key": "even", "match": {"value": True}}]}
    for kwargs in ({}, {"filter": flt}, {"with_vectors": True, "with_payload": ["i"]}):
        batch = c.search_batch(queries, k=7, exact=exact, **kwargs)
        assert len(batch) == len(queries)
        for q, hits in zip(queries, batch, strict=True):
            single = c.search(q, k=7, exact=exact, **kwargs)
            assert [h.id for h in hits] == [h.id for h in single]
            assert [h.payload for h in hits] == [h.payload for h in single]
            np.testing.assert_allclose([h.score for h in hits], [h.score for h in single],
                                       atol=1e-5)
            if "with_vectors" in kwargs:
                assert [h.vector for h in hits] == [h.vector for h in single]
    assert c.search_batch(queries[:1], k=3) == [c.search(queries[0], k=3)]
    assert c.search_batch(np.empty((0, DIM)), k=3) == []


@pytest.mark.parametrize("metric", METRICS)
def test_offset_threshold_payload_selection_vectors(db: peregrine.Database, metric: str) -> None:
    c = db.create_collection("c", 8, metric, index={"segment_rows": 32})
    rng = np.random.default_rng(5)
    vecs = rng.standard_normal((100, 8)).astype(np.float32)
    c.upsert(list(range(60)), vecs[:60], [{"a": i, "b": "x", "c": [i]} for i in range(60)])
    c.optimize()
    c.upsert(list(range(60, 100)), vecs[60:], [{"a": i, "b": "y"} for i in range(60, 100)])
    q = rng.standard_normal(8).astype(np.float32)
    full = c.search(q, k=60, exact=True)
    for offset in (0, 1, 5, 29):
        page = c.search(q, k=10, offset=offset, exact=True)
        assert [h.id for h in page] == [h.id for h in full[offset:offset + 10]]
    assert c.search(q, k=5, offset=100, exact=True) == []
    assert [h.id for h in c.search(q, k=5, offset=97, exact=True)] == \
        [h.id for h in c.search(q, k=100, exact=True)[97:]]

    # threshold: keep scores at least as good as the 12th best
    cut = full[11].score
    kept = c.search(q, k=30, exact=True, score_threshold=cut)
    assert [h.id for h in kept] == [h.id for h in full[:12]]
    for h in kept:
        assert h.score >= cut if higher_is_better(metric) else h.score <= cut
    impossible = 1e9 if higher_is_better(metric) else -1.0
    assert c.search(q, k=30, score_threshold=impossible) == []
    with_off = c.search(q, k=5, offset=3, exact=True, score_threshold=cut)
    assert [h.id for h in with_off] == [h.id for h in full[3:8]]

    hits = c.search(q, k=3, with_payload=["a", "c", "missing"], with_vectors=True, exact=True)
    for h in hits:
        assert set(h.payload) <= {"a", "c"} and h.payload["a"] == h.id
        np.testing.assert_allclose(h.vector, stored_vector(metric, vecs[h.id]), atol=1e-6)
    assert all(h.payload is None and h.vector is None
               for h in c.search(q, k=3, with_payload=False))
    assert all(isinstance(h.score, float) for h in hits)


def test_payload_edit_operations(db: peregrine.Database) -> None:
    c = db.create_collection("c", 4, "dot", index={"segment_rows": 16})
    rng = np.random.default_rng(6)
    vecs = rng.standard_normal((30, 4)).astype(np.float32)
    c.upsert(list(range(30)), vecs, [{"a": 1, "b": {"x": 1}, "color": "red"} for _ in range(30)])
    c.create_payload_index("color", "keyword")
    c.optimize()
    c.upsert([30], [[1, 1, 1, 1]])  # one point in the mutable segment, no payload

    c.set_payload([1, 2, 30, 999], {"b": 2, "new": [1, 2]})
    assert c.retrieve([1])[0].payload == {"a": 1, "b": 2, "color": "red", "new": [1, 2]}
    assert c.retrieve([30])[0].payload == {"b": 2, "new": [1, 2]}
    assert c.retrieve([999]) == []  # missing ids ignored, not created
    assert c.count() == 31

    c.set_payload([3], {"only": True}, overwrite=True)
    assert c.retrieve([3])[0].payload == {"only": True}

    c.delete_payload([1, 4], ["a", "b", "absent"])
    assert c.retrieve([1])[0].payload == {"color": "red", "new": [1, 2]}
    assert c.retrieve([4])[0].payload == {"color": "red"}

    c.clear_payload([5, 30])
    assert c.retrieve([5])[0].payload == {} and c.retrieve([30])[0].payload == {}

    c.set_payload([6, 7], {"color": "blue"})
    # vectors are untouched by payload edits
    got = {r.id: r.vector for r in c.retrieve([1, 3, 4, 5, 6], with_vectors=True)}
    for pid, vec in got.items():
        np.testing.assert_allclose(vec, vecs[pid], atol=1e-6)
    # indexed and unindexed filters see the edits, before and after optimize
    for _ in range(2):
        assert c.count({"must": [{"key": "color", "match": {"value": "blue"}}]}) == 2
        assert c.count({"must": [{"key": "color", "match": {"value": "red"}}]}) == 26
        assert c.count({"must": [{"key": "only", "match": {"value": True}}]}) == 1
        assert c.count({"must": [{"is_empty": {"key": "a"}}]}) == 5  # 1, 3, 4, 5, 30
        assert c.count() == 31
        c.optimize()


@pytest.mark.parametrize("background", [False, True])
def test_read_your_writes(open_db: Any, background: bool) -> None:
    db = open_db(background=background)
    c = db.create_collection("c", 8, "cosine", index={"segment_rows": 64, "max_segments": 2})
    rng = np.random.default_rng(7)
    live = 0
    for batch in range(25):
        vecs = rng.standard_normal((13, 8)).astype(np.float32)
        ids = list(range(batch * 13, batch * 13 + 13))
        c.upsert(ids, vecs, [{"batch": batch}] * 13)
        live += 13
        assert c.count() == live
        assert c.count({"must": [{"key": "batch", "match": {"value": batch}}]}) == 13
        assert [r.id for r in c.retrieve(ids)] == ids
        for pid, v in zip(ids[::4], vecs[::4], strict=False):
            assert c.search(v, k=1, exact=True)[0].id == pid
            assert pid in {h.id for h in c.search(v, k=3)}
        gone = ids[-1]
        c.delete(ids=[gone])
        live -= 1
        assert c.retrieve([gone]) == []
        assert gone not in {h.id for h in c.search(vecs[-1], k=5)}
        assert c.count() == live
        c.upsert([gone], vecs[-1:], [{"batch": batch}])
        live += 1
        assert c.count() == live
    if background:
        deadline = time.monotonic() + 120
        while c.info().index_backlog_segments and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.info().sealed_segments >= 1


def _state(c: peregrine.Collection, queries: np.ndarray) -> tuple[Any, ...]:
    return (
        c.count(),
        dump(c),
        [[(h.id, h.score) for h in c.search(q, k=5, exact=True)] for q in queries],
        c.info().config,
    )


def assert_same_state(got: tuple[Any, ...], want: tuple[Any, ...], config: bool = True) -> None:
    """Equal up to float32 rounding (sealing re-normalises cosine vectors)."""
    assert got[0] == want[0]
    assert_same_points(got[1], want[1], atol=1e-6)
    for g, w in zip(got[2], want[2], strict=True):
        assert [i for i, _ in g] == [i for i, _ in w]
        np.testing.assert_allclose([s for _, s in g], [s for _, s in w], atol=1e-5)
    if config:
        assert got[3] == want[3]


@pytest.mark.parametrize("fsync", ["always", "group", "never"])
def test_reopen_after_optimize_keeps_everything(open_db: Any, fsync: str) -> None:
    db = open_db(fsync=fsync)
    c = db.create_collection("c", 8, "l2", index={"segment_rows": 32, "m": 8, "ef": 40})
    c.create_payload_index("tag", "keyword")
    rng = np.random.default_rng(8)
    ids = _mixed_ids(rng, 70, 30)
    c.upsert(ids, rng.standard_normal((100, 8)), [{"tag": f"t{i % 3}"} for i in range(100)])
    c.delete(ids=ids[:10])
    c.set_payload(ids[10:15], {"edited": True})
    c.optimize()
    queries = rng.standard_normal((3, 8))
    before = _state(c, queries)
    db.close()
    with pytest.raises(peregrine.ClosedError):
        c.count()
    db = open_db(fsync=fsync)
    assert db.list_collections() == ["c"]
    c = db.collection("c")
    assert_same_state(_state(c, queries), before)
    assert c.config.payload_indexes == {"tag": "keyword"}
    assert c.count({"must": [{"key": "tag", "match": {"value": "t1"}}]}) == \
        sum(1 for i in range(10, 100) if i % 3 == 1)
    # and it keeps working: write, optimize, reopen again
    c.upsert([12345], [[0.0] * 8], [{"tag": "t9"}])
    c.optimize()
    db.close()
    c = open_db(fsync=fsync).collection("c")
    assert c.retrieve([12345])[0].payload == {"tag": "t9"}
    assert c.count() == 91


def test_reopen_replays_an_unsealed_wal(open_db: Any) -> None:
    """No optimize before close: the mutable segment comes back from the WAL."""
    db = open_db()
    c = db.create_collection("c", 8, "cosine", index={"segment_rows": 64})
    rng = np.random.default_rng(9)
    vecs = rng.standard_normal((40, 8))
    c.upsert(list(range(40)), vecs, [{"i": i} for i in range(40)])
    c.delete(ids=[3, 4])
    c.upsert([5], vecs[6:7], [{"i": "five"}])
    c.set_payload([7], {"x": 1})
    c.delete(filter={"must": [{"key": "i", "match": {"value": 9}}]})
    queries = rng.standard_normal((3, 8))
    before = _state(c, queries)
    db.close()
    c = open_db().collection("c")
    assert_same_state(_state(c, queries), before)
    assert c.count() == 37


def test_reopen_replays_delete_of_sealed_point(open_db: Any) -> None:
    db = open_db()
    c = db.create_collection("c", 8, "dot", index={"segment_rows": 64})
    c.upsert([1, 2, 3], np.eye(3, 8))
    c.optimize()
    c.delete(ids=[1])  # WAL tail tombstones a row of the sealed segment
    db.close()
    c = open_db().collection("c")
    assert sorted(dump(c)) == [2, 3]


def test_reopen_with_wal_longer_than_a_segment(open_db: Any) -> None:
    db = open_db()
    c = db.create_collection("c", 8, "dot", index={"segment_rows": 16})
    c.upsert(list(range(40)), np.ones((40, 8)))
    db.close()
    assert open_db().collection("c").count() == 40


def test_restore_collection_with_wal_tail_delete(db: peregrine.Database, tmp_path: Path) -> None:
    c = db.create_collection("c", 8, "dot", index={"segment_rows": 64})
    c.upsert([1, 2, 3], np.eye(3, 8))
    c.optimize()
    c.delete(ids=[1])
    snap = c.snapshot(tmp_path / "c.snap")
    copy = db.restore_collection(snap, "copy")
    assert sorted(dump(copy)) == [2, 3]


def test_restore_then_background_seal_keeps_deletes(open_db: Any, tmp_path: Path) -> None:
    db = open_db(background=True)
    c = db.create_collection("c", 8, "dot", index={"segment_rows": 16})
    c.upsert(list(range(10)), np.random.default_rng(0).random((10, 8)))
    c.optimize()
    c.delete(ids=[0])
    c.restore(c.snapshot(tmp_path / "s.snap"))
    assert c.retrieve([0]) == []
    c.upsert(list(range(100, 116)), np.ones((16, 8)))  # fills the mutable segment exactly
    c.upsert([200], np.ones((1, 8)))  # freezes it; the background optimizer seals it
    deadline = time.monotonic() + 120
    # The frozen rows extend the restored segment (its tombstone carried row for row).
    while (c.info().indexed_points < 25 or c.info().index_backlog_segments) \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    assert c.info().sealed_segments == 1 and c.info().indexed_points == 25
    assert c.retrieve([0]) == []
    db.close()
    c = open_db().collection("c")
    assert c.retrieve([0]) == []
    assert c.count() == 26


def _snapshot_fixture(c: peregrine.Collection, rng: np.random.Generator) -> None:
    """Sealed data + an unsealed WAL tail  + an index."""
    c.create_payload_index("g", "integer")
    c.upsert(list(range(100)), rng.standard_normal((100, 8)), [{"g": i % 3} for i in range(100)])
    c.delete(ids=[0, 1])
    c.optimize()
    c.upsert(list(range(100, 120)), rng.standard_normal((20, 8)), [{"g": 9}] * 20)
    c.upsert(["6f1b1b0e-8a4c-4c55-9a0e-3f6a1c2b9d10"], rng.standard_normal((1, 8)))
    c.delete(ids=[119])


def test_snapshot_restore_roundtrip(open_db: Any, tmp_path: Path) -> None:
    db = open_db()
    c = db.create_collection("c", 8, "cosine", index={"segment_rows": 64})
    rng = np.random.default_rng(10)
    _snapshot_fixture(c, rng)
    queries = rng.standard_normal((3, 8))
    want = _state(c, queries)
    snap = c.snapshot(tmp_path / "snaps" / "c.snap")
    assert snap.is_file()

    # change everything, then restore in place
    c.upsert(list(range(200, 260)), rng.standard_normal((60, 8)))
    c.delete(ids=list(range(2, 50)))
    c.set_payload([60], {"g": 100})
    c.optimize()
    assert _state(c, queries)[0] != want[0]
    c.restore(snap)
    assert_same_state(_state(c, queries), want)
    assert c.config.payload_indexes == {"g": "integer"}
    c.upsert([5000], [[1.0] * 8])  # restored collection is writable
    assert c.count() == want[0] + 1

    # restore under a new name, and over an existing collection
    copy = db.restore_collection(snap, "copy")
    assert copy.name == "copy"
    assert_same_state(_state(copy, queries), want, config=False)
    other = db.create_collection("other", 3, "dot")
    other.upsert([1], [[1, 2, 3]])
    replaced = db.restore_collection(snap, "other")
    assert replaced.config.dim == 8
    assert_same_state(_state(replaced, queries), want, config=False)
    assert db.list_collections() == ["c", "copy", "other"]

    # everything survives a reopen
    for name in db.list_collections():
        db.collection(name).optimize()
    db.close()
    db = open_db()
    assert db.list_collections() == ["c", "copy", "other"]
    assert_same_state(_state(db.collection("copy"), queries), want, config=False)
    assert db.collection("c").retrieve([5000]) != []
    assert db.collection("copy").retrieve([5000]) == []


def test_snapshot_while_background_optimizer_runs(open_db: Any, tmp_path: Path) -> None:
    db = open_db(background=True)
    c = db.create_collection("c", 8, "dot", index={"segment_rows": 32, "max_segments": 2})
    rng = np.random.default_rng(11)
    model: dict[int, Any] = {}
    snaps = []
    for b in range(12):
        ids = list(range(b * 20, b * 20 + 20))
        vecs = rng.standard_normal((20, 8)).astype(np.float32)
        c.upsert(ids, vecs, [{"b": b}] * 20)
        model.update({i: ({"b": b}, tuple(v)) for i, v in zip(ids, vecs, strict=True)})
        if b % 4 == 3:
            c.delete(ids=ids[:5])
            for i in ids[:5]:
                del model[i]
            snaps.append((c.snapshot(tmp_path / f"s{b}.snap"), dict(model)))
    for n, (snap, want) in enumerate(snaps):
        restored = db.restore_collection(snap, f"r{n}")
        assert_same_points(dump(restored), want, atol=1e-6)


def test_snapshot_of_collection_with_long_valid_name(db: peregrine.Database,
                                                     tmp_path: Path) -> None:
    name = "n" * 255  # validate_collection_name accepts up to 255 characters
    c = db.create_collection(name, 4)
    c.upsert([1], [[1, 2, 3, 4]])
    snap = c.snapshot(tmp_path / "long.snap")
    c.restore(snap)
    assert c.count() == 1


def test_drop_and_list_collections(open_db: Any) -> None:
    db = open_db()
    assert db.list_collections() == []
    a = db.create_collection("a", 4)
    db.create_collection("B-2.x_", 4, "l2")
    a.upsert([1], [[1, 0, 0, 0]])
    assert db.list_collections() == ["B-2.x_", "a"]
    assert db.has_collection("a")
    with pytest.raises(peregrine.AlreadyExistsError):
        db.create_collection("a", 8)
    assert db.collection("a").config.dim == 4 and a.count() == 1
    db.drop_collection("a")
    assert db.list_collections() == ["B-2.x_"] and not db.has_collection("a")
    with pytest.raises(peregrine.CollectionNotFoundError):
        db.collection("a")
    with pytest.raises(peregrine.CollectionNotFoundError):
        db.drop_collection("a")
    with pytest.raises(peregrine.ClosedError):  # the dropped handle is dead
        a.upsert([2], [[1, 0, 0, 0]])
    a2 = db.create_collection("a", 2, "dot")  # same name, fresh and empty
    assert a2.count() == 0 and a2.config.dim == 2
    db.close()
    db = open_db()
    assert db.list_collections() == ["B-2.x_", "a"]
    assert db.collection("a").config.dim == 2 and db.collection("a").count() == 0
    assert not any(p.name.startswith(".") for p in (db.path / "collections").iterdir())


def test_closed_database_and_context_manager(db_path: Path) -> None:
    with peregrine.open(db_path, background=False) as db:
        c = db.create_collection("c", 4)
        c.upsert([1], [[1, 2, 3, 4]])
    for call in (lambda: db.collection("c"), lambda: db.list_collections(),
                 lambda: db.create_collection("d", 4), lambda: c.upsert([2], [[1, 1, 1, 1]]),
                 lambda: c.search([1, 2, 3, 4]), lambda: c.count(), lambda: c.retrieve([1]),
                 lambda: c.scroll(), lambda: c.delete(ids=[1]), lambda: c.optimize()):
        with pytest.raises(peregrine.ClosedError):
            call()
    db.close()  # idempotent
    with peregrine.open(db_path, background=False) as db:
        assert db.collection("c").count() == 1


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_int8_quantization_recall(db: peregrine.Database, metric: str) -> None:
    n, dim = 2000, 32
    rng = np.random.default_rng(12)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    c = db.create_collection("q", dim, metric, index={
        "quantization": "int8", "segment_rows": 512, "m": 16, "ef_construction": 64})
    for start in range(0, n, 500):
        c.upsert(list(range(start, start + 500)), vecs[start:start + 500])
    c.optimize()
    info = c.info()
    assert info.sealed_segments == 1 and info.config.index.quantization.value == "int8"
    stored = np.stack([stored_vector(metric, v) for v in vecs])
    good = wanted = 0
    for q in rng.standard_normal((50, dim)).astype(np.float32):
        truth = scores(metric, q, stored)
        oracle = dict(enumerate(truth.tolist()))
        hits = c.search(q, k=10)
        for h in hits:  # int8 candidates are rescored with the float32 vectors
            assert abs(h.score - oracle[h.id]) <= 1e-3
        g, w = tie_aware_recall(hits, oracle, 10, metric)
        good, wanted = good + g, wanted + w
        check_topk(c.search(q, k=10, exact=True), oracle, 10, metric)
    assert good / wanted >= 0.9, good / wanted


def test_filtered_hnsw_path(db: peregrine.Database) -> None:
    """full_scan_threshold=0 forces the FAISS bitmap-selector walk for filtered queries."""
    n, dim = 1500, 16
    rng = np.random.default_rng(13)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    c = db.create_collection("f", dim, "dot", index={
        "segment_rows": 1024, "full_scan_threshold": 0, "ef": 64})
    c.upsert(list(range(n)), vecs, [{"m": i % 5} for i in range(n)])
    c.optimize()
    c.delete(ids=list(range(0, n, 7)))  # tombstones take the same path
    live = {i for i in range(n) if i % 7}
    good = wanted = 0
    for q in rng.standard_normal((30, dim)).astype(np.float32):
        allowed = {i for i in live if i % 5 in (1, 2)}
        oracle = {i: float(vecs[i] @ q) for i in allowed}
        hits = c.search(q, k=10, filter={"must": [{"key": "m", "match": {"any": [1, 2]}}]})
        assert {h.id for h in hits} <= allowed and len(hits) == 10
        g, w = tie_aware_recall(hits, oracle, 10, "dot")
        good, wanted = good + g, wanted + w
    assert good / wanted >= 0.85


def test_extreme_but_valid_ids(db: peregrine.Database) -> None:
    c = db.create_collection("c", 4, "dot", index={"segment_rows": 16})
    ids: list[Any] = [0, 1, 255, 256, 2**32, 2**63, 2**64 - 1,
                      np.uint64(2**64 - 2), np.int64(77),
                      "00000000-0000-0000-0000-000000000000",
                      "00000000-0000-0000-0000-000000000001",
                      "12345678-0000-0000-0000-000000000000",
                      "ffffffff-ffff-ffff-ffff-ffffffffffff"]
    c.upsert(ids, np.eye(4)[np.arange(len(ids)) % 4] + np.arange(len(ids))[:, None])
    want = sorted([int(i) if not isinstance(i, str) else i for i in ids], key=id_sort_key)
    for seal in (False, True):
        if seal:
            c.optimize()
        assert [r.id for r in c.scroll(limit=100)[0]] == want
        assert [r.id for r in c.retrieve(ids)] == [i if isinstance(i, str) else int(i)
                                                  for i in ids]
        assert c.count({"must": [{"has_id": [0, "00000000-0000-0000-0000-000000000000"]}]}) == 2
    assert c.delete(ids=[0, 2**64 - 1, "00000000-0000-0000-0000-000000000000"]) == 3
    assert c.count() == len(ids) - 3


def test_search_accepts_non_contiguous_float32_queries(db: peregrine.Database) -> None:
    c = db.create_collection("c", 8, "dot", index={"segment_rows": 16})
    rng = np.random.default_rng(14)
    c.upsert(list(range(40)), rng.standard_normal((40, 8)))
    c.optimize()
    base = rng.standard_normal(16).astype(np.float32)
    strided = base[::2]
    assert not strided.flags.c_contiguous
    for exact in (True, False):
        assert c.search(strided, k=5, exact=exact) == \
            c.search(np.ascontiguousarray(strided), k=5, exact=exact)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_cosine_normalisation_of_extreme_magnitudes(db: peregrine.Database) -> None:
    c = db.create_collection("c", 8, "cosine")
    c.upsert([1, 2], [[1e-23] * 8, [1e20] * 8])
    for h in c.search([1.0] * 8, k=2, exact=True):
        assert h.score == pytest.approx(1.0, abs=1e-4), h


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_float32_query_fast_path_accepts_large_finite_values(db: peregrine.Database) -> None:
    c = db.create_collection("c", 8, "dot")
    c.upsert([1, 2], [[1e-3] * 8, [-1e-3] * 8])
    big = [3e38, 3e38, 0, 0, 0, 0, 0, 0]
    as_list = c.search(big, k=2, exact=True)
    assert c.search(np.asarray(big, dtype=np.float32), k=2, exact=True) == as_list


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_exact_search_keeps_points_with_overflowing_scores(db: peregrine.Database) -> None:
    c = db.create_collection("c", 4, "dot")
    c.upsert([1, 2], [[1e20] * 4, [1.0] * 4])
    hits = c.search([1e20] * 4, k=2, exact=True)
    assert [h.id for h in hits] == [1, 2]


def test_database_lock_rejects_second_process(open_db: Any, db_path: Path) -> None:
    db = open_db()
    db.create_collection("c", 4).upsert([1], [[1, 2, 3, 4]])
    script = textwrap.dedent("""
        import sys, peregrine
        try:
            db = peregrine.open(sys.argv[1], background=False)
        except peregrine.StorageError as exc:
            print("LOCKED", exc)
        else:
            print("OPEN", db.collection("c").count())
            db.close()
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def other() -> str:
        out = subprocess.run([sys.executable, "-c", script, str(db_path)], env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert other().startswith("LOCKED")
    assert db.collection("c").count() == 1  # the failed opener changed nothing
    db.close()
    assert other() == "OPEN 1"


def test_empty_collection_reads(db: peregrine.Database) -> None:
    c = db.create_collection("c", 4, "l2", index={"segment_rows": 16})
    for _ in range(2):
        assert c.count() == 0 and len(c) == 0
        assert c.search([1, 2, 3, 4], k=5) == [] and c.search([1, 2, 3, 4], k=5, exact=True) == []
        assert c.search_batch([[1, 2, 3, 4]] * 2, k=3) == [[], []]
        assert c.scroll() == ([], None)
        assert c.retrieve([1, 2]) == []
        assert c.delete(filter={"must": [{"key": "a", "match": {"value": 1}}]}) == 0
        c.optimize()
    c.upsert([1], [[1, 1, 1, 1]])
    c.delete(ids=[1])
    c.optimize()  # everything deleted: no segment left, still usable
    assert c.count() == 0 and c.search([1, 2, 3, 4], k=5) == []
    assert c.info().sealed_segments == 0


def test_ids_matching_evaluates_filter_over_live_points(db: peregrine.Database) -> None:
    c = db.create_collection("c", 2, index={"segment_rows": 16})
    c.upsert(list(range(20)), np.ones((20, 2)), [{"odd": i % 2} for i in range(20)])
    c.optimize()
    c.upsert([21, 3], np.ones((2, 2)), [{"odd": 1}, {"odd": 0}])  # 3 moves to even
    c.delete(ids=[5])
    odd = {"must": [{"key": "odd", "match": {"value": 1}}]}
    assert c.ids_matching(odd) == [1, 7, 9, 11, 13, 15, 17, 19, 21]
    assert c.ids_matching(None) == sorted({*range(20), 21} - {5})
    assert c.ids_matching({"must": [{"key": "odd", "match": {"value": 7}}]}) == []


def test_info_on_dropped_collection_raises_closed(db: peregrine.Database) -> None:
    c = db.create_collection("c", 4)
    c.upsert([1], [[1, 2, 3, 4]])
    db.drop_collection("c")
    with pytest.raises(peregrine.ClosedError):
        c.info()


@pytest.mark.parametrize("state", ["unsealed", "sealed", "mixed"])
def test_facet_counts_match_the_payloads_in_every_layout(db: peregrine.Database,
                                                         state: str) -> None:
    c = db.create_collection("c", DIM, "cosine", index={"segment_rows": 64, "max_segments": 2})
    c.create_payload_index("i", "integer")
    c.create_payload_index("even", "bool")
    rng = np.random.default_rng(len(state))
    model = Model("cosine")
    _populate(c, model, rng, state)
    for key, kind in (("even", bool), ("i", int)):
        counts: dict[Any, int] = {}
        for _, payload in model.points.values():
            value = payload.get(key)
            if type(value) is kind:
                counts[value] = counts.get(value, 0) + 1
        want = sorted(counts.items(), key=lambda h: (-h[1], h[0]))
        assert c.facet(key, limit=1000) == want[:1000]
        assert c.facet(key, limit=3) == want[:3]
    odd = {"must": [{"key": "even", "match": {"value": False}}]}
    assert c.facet("even", odd) == [(False, sum(
        1 for _, p in model.points.values() if p.get("even") is False))]
    with pytest.raises(peregrine.InvalidInputError, match="payload index"):
        c.facet("over")


@pytest.mark.parametrize("state", ["unsealed", "sealed", "mixed"])
def test_scroll_ordered_by_a_field_in_every_layout(db: peregrine.Database, state: str) -> None:
    c = db.create_collection("c", DIM, "cosine", index={"segment_rows": 64, "max_segments": 2})
    c.create_payload_index("i", "integer")
    model = Model("cosine")
    _populate(c, model, np.random.default_rng(len(state) + 7), state)
    numbered = sorted((p["i"], pid) for pid, (_, p) in model.points.items() if "i" in p)
    got = c.scroll_ordered("i", limit=1000)
    assert [(r.order_value, r.id) for r in got] == numbered
    top = c.scroll_ordered("i", descending=True, start_from=100, limit=5, with_payload=False)
    assert [(r.order_value, r.id) for r in top] == sorted(
        [n for n in numbered if n[0] <= 100], reverse=True)[:5]
    assert all(r.payload is None for r in top)


@pytest.mark.parametrize("state", ["unsealed", "sealed", "mixed"])
def test_scan_scores_every_live_point_in_every_layout(db: peregrine.Database,
                                                       state: str) -> None:
    c = db.create_collection("c", DIM, "dot", index={"segment_rows": 64, "max_segments": 2})
    model = Model("dot")
    _populate(c, model, np.random.default_rng(len(state) + 3), state)
    w = np.random.default_rng(9).standard_normal(DIM).astype(np.float32)

    def score(vectors: np.ndarray) -> np.ndarray:
        return np.abs(vectors @ w)  # not a similarity any index could serve

    ids = list(model.points)
    scores = np.array([abs(float(model.points[i][0] @ w)) for i in ids])
    want = [ids[j] for j in np.argsort(-scores, kind="stable")[:15]]
    got = c.scan(score, k=10, offset=5, with_payload=False)
    assert [h.id for h in got] == want[5:]
    assert np.allclose([h.score for h in got], np.sort(scores)[::-1][5:15], atol=1e-5)
    even = c.scan(score, k=300, filter={"must": [{"key": "even", "match": {"value": True}}]})
    assert {h.id for h in even} == {i for i, (_, p) in model.points.items()
                                    if p.get("even") is True}


def test_geo_points_survive_sealing_and_reopening(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    lons, lats = rng.uniform(-10, 10, 500), rng.uniform(40, 50, 500)
    flt = {"must": [{"key": "at", "geo_bounding_box": {
        "top_left": {"lon": -2.0, "lat": 47.0}, "bottom_right": {"lon": 3.0, "lat": 44.0}}}]}
    want = int(np.count_nonzero((lons >= -2) & (lons <= 3) & (lats >= 44) & (lats <= 47)))
    db = peregrine.open(tmp_path / "db")
    c = db.create_collection("g", DIM, "cosine", index={"segment_rows": 64})
    c.create_payload_index("at", "geo")
    c.upsert(list(range(500)), np.random.default_rng(1).standard_normal((500, DIM)),
             [{"at": {"lon": float(x), "lat": float(y)}} for x, y in zip(lons, lats,
                                                                         strict=True)])
    c.optimize()
    assert c.count(flt) == want > 0
    db.close()
    again = peregrine.open(tmp_path / "db")
    assert again.collection("g").count(flt) == want
    again.close()


def test_order_by_an_integer_index_is_exact_beyond_float_precision(
        db: peregrine.Database) -> None:
    c = db.create_collection("c", DIM, "dot")
    c.create_payload_index("g", "integer")
    big = 2**53
    values = {1: big + 1, 2: big, 3: 3.5, 4: 2**64 - 1, 5: -(2**63), 6: 7, 7: [big + 3, 1]}
    c.upsert(list(values), np.ones((len(values), DIM)), [{"g": v} for v in values.values()])
    up = c.scroll_ordered("g", limit=10, with_payload=False)
    # Floats and integers beyond int64 are not in an integer index; a point with
    # several values is placed at its first in the direction asked.
    assert [(r.id, r.order_value) for r in up] == [(5, -(2**63)), (7, 1), (6, 7),
                                                   (2, big), (1, big + 1)]
    down = c.scroll_ordered("g", descending=True, start_from=float(big), limit=10)
    assert [(r.id, r.order_value) for r in down] == [(2, big), (6, 7), (7, 1), (5, -(2**63))]
