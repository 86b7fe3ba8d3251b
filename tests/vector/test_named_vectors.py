"""Named dense and sparse vectors in the engine, against numpy oracles.

The primary vector keeps its HNSW path; named dense and sparse vectors ride in
each row's record and are searched exactly per segment. These tests check the
exact answers over mutable, sealed and mixed segments, after deletes,
overwrites and payload edits, with filters, with IDF, and that everything
survives a reopen (WAL replay and sealed segments) and a snapshot round trip.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from peregrine.core.errors import InvalidInputError
from peregrine.vector.collection.collection import Collection
from peregrine.vector.collection.database import open_database
from peregrine.vector.types import (
    CollectionConfig,
    DenseSpec,
    IndexConfig,
    Metric,
    SparseModifier,
)

DIM, VOCAB = 8, 60


def _config(modifier: SparseModifier = SparseModifier.NONE, **over: Any) -> CollectionConfig:
    return CollectionConfig("c", DIM, Metric.COSINE, index=IndexConfig(segment_rows=64),
                            vector_name="dense", named={"img": DenseSpec(3, Metric.L2)},
                            sparse={"text": modifier}, **over)


def _points(rng: np.random.Generator, ids: range) -> tuple[np.ndarray, list[dict[str, Any]]]:
    side = []
    for i in ids:
        k = int(rng.integers(1, 8))
        row: dict[str, Any] = {"text": {"indices": rng.choice(VOCAB, k, replace=False).tolist(),
                                        "values": rng.random(k).round(3).tolist()}}
        if i % 3:
            row["img"] = rng.normal(size=3).tolist()
        side.append(row)
    return rng.normal(size=(len(ids), DIM)), side


class Oracle:
    """What the collection should hold, as plain dicts."""

    def __init__(self) -> None:
        self.sparse: dict[int, dict[int, float]] = {}
        self.img: dict[int, np.ndarray] = {}
        self.payload: dict[int, dict[str, Any]] = {}

    def upsert(self, ids: range, side: list[dict[str, Any]]) -> None:
        for i, row in zip(ids, side, strict=True):
            t = row["text"]
            self.sparse[i] = {int(a): float(np.float32(b))
                              for a, b in zip(t["indices"], t["values"], strict=True)}
            self.payload[i] = {"i": i, "even": i % 2 == 0}
            if "img" in row:
                self.img[i] = np.asarray(row["img"], np.float32).astype(np.float64)
            else:
                self.img.pop(i, None)

    def delete(self, ids: list[int]) -> None:
        for i in ids:
            self.sparse.pop(i, None)
            self.img.pop(i, None)
            self.payload.pop(i, None)

    def sparse_scores(self, query: dict[int, float], idf: bool) -> dict[int, float]:
        n = len(self.sparse)
        weight = {}
        for d in query:
            df = sum(1 for v in self.sparse.values() if d in v)
            weight[d] = math.log((n - df + 0.5) / (df + 0.5) + 1) if idf else 1.0
        out = {}
        for pid, vec in self.sparse.items():
            shared = set(vec) & set(query)
            if shared:
                out[pid] = sum(vec[d] * query[d] * weight[d] for d in shared)
        return out


def _check_sparse(c: Collection, oracle: Oracle, rng: np.random.Generator, idf: bool,
                  flt: dict[str, Any] | None = None) -> None:
    for _ in range(10):
        dims = rng.choice(VOCAB, 4, replace=False)
        query = {int(d): float(v) for d, v in zip(dims, rng.random(4).round(3), strict=True)}
        hits = c.search_named("text", {"indices": list(query), "values": list(query.values())},
                              k=10, filter=flt)
        expect = oracle.sparse_scores(query, idf)
        if flt is not None:
            expect = {p: s for p, s in expect.items() if p % 2 == 0}
        best = sorted(expect.items(), key=lambda kv: -kv[1])[:10]
        assert len(hits) == len(best)
        for hit, (_, score) in zip(hits, best, strict=True):
            assert hit.score == pytest.approx(score, rel=1e-4, abs=1e-5)
            assert expect[hit.id] == pytest.approx(hit.score, rel=1e-4, abs=1e-5)


def _check_img(c: Collection, oracle: Oracle, rng: np.random.Generator) -> None:
    for _ in range(5):
        q = rng.normal(size=3).astype(np.float32)
        hits = c.search_named("img", q.tolist(), k=5)
        dist = {p: float(np.linalg.norm(v - q.astype(np.float64))) for p, v in oracle.img.items()}
        best = sorted(dist.values())[:5]
        assert [h.score for h in hits] == pytest.approx(best, rel=1e-4, abs=1e-4)
        for h in hits:
            assert dist[h.id] == pytest.approx(h.score, rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("modifier", [SparseModifier.NONE, SparseModifier.IDF])
def test_sparse_and_named_search_match_the_oracle_across_segments(
        tmp_path: Path, modifier: SparseModifier) -> None:
    rng = np.random.default_rng(7)
    idf = modifier is SparseModifier.IDF
    c = Collection(tmp_path / "c", _config(modifier), background=False)
    oracle = Oracle()
    try:
        for start in (0, 150):  # the first batch gets sealed, the second stays mutable
            ids = range(start, start + 150)
            dense, side = _points(rng, ids)
            c.upsert(list(ids), dense, [{"i": i, "even": i % 2 == 0} for i in ids], side=side)
            oracle.upsert(ids, side)
            if start == 0:
                c.optimize()
        _check_sparse(c, oracle, rng, idf)
        _check_img(c, oracle, rng)
        # Deletes and overwrites move points between segments; IDF follows them.
        gone = list(range(0, 300, 7))
        c.delete(ids=gone)
        oracle.delete(gone)
        again = range(10, 40)
        dense, side = _points(rng, again)
        c.upsert(list(again), dense, [{"i": i, "even": i % 2 == 0} for i in again], side=side)
        oracle.upsert(again, side)
        _check_sparse(c, oracle, rng, idf)
        _check_sparse(c, oracle, rng, idf, flt={"must": [{"key": "even", "match": {
            "value": True}}]})
        _check_img(c, oracle, rng)
        c.optimize()
        _check_sparse(c, oracle, rng, idf)
        _check_img(c, oracle, rng)
    finally:
        c.close()
    reopened = Collection(tmp_path / "c", _config(modifier), background=False)
    try:
        _check_sparse(reopened, oracle, rng, idf)
        _check_img(reopened, oracle, rng)
    finally:
        reopened.close()


def test_payload_edits_keep_vectors_and_vector_edits_keep_payload(tmp_path: Path) -> None:
    c = Collection(tmp_path / "c", _config(), background=False)
    try:
        c.upsert([1], [[1.0] * DIM], [{"a": 1}], side=[{
            "text": {"indices": [5, 2], "values": [0.5, 0.25]}, "img": [1.0, 2.0, 3.0]}])
        c.set_payload([1], {"b": 2})
        c.delete_payload([1], ["a"])
        (rec,) = c.retrieve([1], with_vectors=True)
        assert rec.payload == {"b": 2}
        assert rec.vector is not None and isinstance(rec.vector, dict)
        assert rec.vector["text"] == {"indices": [2, 5], "values": [0.25, 0.5]}
        assert rec.vector["img"] == [1.0, 2.0, 3.0]
        c.update_vectors([1], [{"img": [0.0, 0.0, 1.0]}])
        c.delete_vectors([1], ["text"])
        (rec,) = c.retrieve([1], with_vectors=["img", "text"])
        assert rec.payload == {"b": 2}
        assert rec.vector == {"img": [0.0, 0.0, 1.0]}
        assert c.search_named("text", {"indices": [2], "values": [1.0]}) == []
        c.delete_vectors([1], ["dense"])  # a named primary vector may go too
        (rec,) = c.retrieve([1], with_vectors=True)
        assert rec.payload == {"b": 2} and rec.vector == {"img": [0.0, 0.0, 1.0]}
        assert c.search([1.0] * DIM) == []
    finally:
        c.close()


def test_sparse_only_collection(tmp_path: Path) -> None:
    config = CollectionConfig("c", 1, Metric.DOT, dense=False,
                              sparse={"bm25": SparseModifier.IDF})
    c = Collection(tmp_path / "c", config, background=False)
    try:
        c.upsert([1, 2], None, side=[{"bm25": {"indices": [1], "values": [1.0]}},
                                     {"bm25": {"indices": [1, 2], "values": [1.0, 1.0]}}])
        hits = c.search_named("bm25", {"indices": [2], "values": [1.0]})
        assert [h.id for h in hits] == [2]
        with pytest.raises(InvalidInputError, match="no dense vector"):
            c.upsert([3], [[1.0]])
        with pytest.raises(InvalidInputError, match="no dense vector"):
            c.search([1.0])
        (rec,) = c.retrieve([1], with_vectors=True)
        assert rec.vector == {"bm25": {"indices": [1], "values": [1.0]}}
    finally:
        c.close()


@pytest.mark.parametrize(("side", "match"), [
    ({"text": {"indices": [1, 1], "values": [1.0, 2.0]}}, "unique"),
    ({"text": {"indices": [-1], "values": [1.0]}}, "indices"),
    ({"text": {"indices": [1], "values": [float("nan")]}}, "NaN"),
    ({"text": {"indices": [1, 2], "values": [1.0]}}, "one length"),
    ({"text": [1.0, 2.0]}, "indices"),
    ({"img": [1.0, 2.0]}, "dimension"),
    ({"nope": [1.0]}, "no vector named"),
])
def test_bad_side_vectors_are_refused_and_nothing_is_written(
        tmp_path: Path, side: dict[str, Any], match: str) -> None:
    c = Collection(tmp_path / "c", _config(), background=False)
    try:
        with pytest.raises(InvalidInputError, match=match):
            c.upsert([1, 2], np.ones((2, DIM)), side=[{}, side])
        assert len(c) == 0
    finally:
        c.close()


def test_snapshot_round_trip_and_reopened_database_keep_side_vectors(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    db = open_database(tmp_path / "db")
    c = db.create_collection("c", DIM, "cosine", {"segment_rows": 64}, vector_name="dense",
                             named={"img": DenseSpec(3, Metric.L2)},
                             sparse={"text": SparseModifier.IDF})
    oracle = Oracle()
    try:
        ids = range(100)
        dense, side = _points(rng, ids)
        c.upsert(list(ids), dense, [{"i": i, "even": i % 2 == 0} for i in ids], side=side)
        oracle.upsert(ids, side)
        c.optimize()
        more = range(100, 130)
        dense, side = _points(rng, more)
        c.upsert(list(more), dense, [{"i": i, "even": i % 2 == 0} for i in more], side=side)
        oracle.upsert(more, side)
        snap = c.snapshot(tmp_path / "s.snapshot")
        c.delete(ids=list(range(50)))
        c.restore(snap)
        _check_sparse(c, oracle, rng, idf=True)
        _check_img(c, oracle, rng)
    finally:
        db.close()
    db = open_database(tmp_path / "db")
    try:
        c = db.collection("c")
        assert c.config.sparse == {"text": SparseModifier.IDF}
        assert c.config.named == {"img": DenseSpec(3, Metric.L2)}
        _check_sparse(c, oracle, rng, idf=True)
        _check_img(c, oracle, rng)
    finally:
        db.close()


def test_rare_and_common_indices_score_alike(tmp_path: Path) -> None:
    """A rare index (few postings: summed per distinct row) and a common one (a
    dense accumulator over the segment) give the same exact scores."""
    c = Collection(tmp_path / "c", _config(), background=False)
    try:
        n = 500
        side = [{"text": {"indices": [1] + ([999] if i in (3, 7) else []),
                          "values": [1.0 + i / n] + ([2.0 + i] if i in (3, 7) else [])}}
                for i in range(n)]
        c.upsert(list(range(n)), np.ones((n, DIM)), side=side)
        rare = c.search_named("text", {"indices": [999], "values": [0.5]}, k=5)
        assert [(h.id, h.score) for h in rare] == [(7, 4.5), (3, 2.5)]
        common = c.search_named("text", {"indices": [1, 999], "values": [1.0, 1.0]}, k=3)
        assert [h.id for h in common] == [7, 3, n - 1]
        assert common[0].score == pytest.approx(1.0 + 7 / n + 9.0)
    finally:
        c.close()


def test_sparse_search_is_exact_on_skewed_lists(tmp_path: Path) -> None:
    """Long lists (common terms) and short ones merge into exact sums: the top
    scores are those of a brute-force sum, with deletes and a filter in play,
    over sealed segments and a mutable one."""
    rng = np.random.default_rng(11)
    n, vocab = 20_000, 400
    p = 1.0 / np.arange(1, vocab + 1)
    p /= p.sum()
    config = CollectionConfig("c", 1, Metric.DOT, index=IndexConfig(segment_rows=8192),
                              dense=False, sparse={"t": SparseModifier.IDF})
    c = Collection(tmp_path / "c", config, background=False)
    try:
        rows = []
        for _ in range(n):
            idx = np.unique(rng.choice(vocab, 8, p=p))
            rows.append((idx, rng.random(idx.size).astype(np.float32) + 0.1))
        c.upsert(list(range(n)), None, [{"odd": i % 2} for i in range(n)],
                 side=[{"t": {"indices": r[0].tolist(), "values": r[1].tolist()}} for r in rows])
        c.optimize()  # sealed segments with sorted lists, and a mutable tail
        gone = set(rng.choice(n, 500, replace=False).tolist())
        c.delete(ids=sorted(gone))
        live = [i for i in range(n) if i not in gone]
        for trial in range(20):
            q = np.unique(np.concatenate([rng.choice(5, 2), rng.choice(vocab, 3)]))
            qv = rng.random(q.size) + 0.5
            df = np.array([sum(1 for i in live if d in rows[i][0]) for d in q])
            idf = np.log((len(live) - df + 0.5) / (df + 0.5) + 1)
            weight = dict(zip(q.tolist(), (qv * idf).tolist(), strict=True))
            flt = {"must": [{"key": "odd", "match": {"value": 1}}]} if trial % 2 else None
            expect = {}
            for i in live:
                if flt and i % 2 == 0:
                    continue
                shared = [(d, v) for d, v in zip(*rows[i], strict=True) if d in weight]
                if shared:
                    expect[i] = sum(float(v) * weight[int(d)] for d, v in shared)
            hits = c.search_named("t", {"indices": q.tolist(), "values": qv.tolist()}, k=10,
                                  filter=flt, with_payload=False)
            best = sorted(expect.values(), reverse=True)[:10]
            assert [h.score for h in hits] == pytest.approx(best, rel=1e-4)
            for h in hits:
                assert expect[h.id] == pytest.approx(h.score, rel=1e-4)
    finally:
        c.close()


@pytest.mark.parametrize(("mode", "flt", "expect"), [
    ("upsert", None, {1: "new", 2: "new", 3: "new"}),
    ("insert_only", None, {1: "old", 2: "old", 3: "new"}),
    ("update_only", None, {1: "new", 2: "new"}),
    ("upsert", {"must": [{"key": "keep", "match": {"value": False}}]},
     {1: "new", 2: "old", 3: "new"}),
    ("update_only", {"must": [{"key": "keep", "match": {"value": False}}]},
     {1: "new", 2: "old"}),
])
def test_conditional_upserts(tmp_path: Path, mode: str, flt: dict[str, Any] | None,
                             expect: dict[int, str]) -> None:
    """update_mode and update_filter decide per point, against the stored state."""
    c = Collection(tmp_path / "c", _config(), background=False)
    try:
        c.upsert([1, 2], np.ones((2, DIM)), [{"v": "old", "keep": False},
                                             {"v": "old", "keep": True}])
        c.optimize()  # point 1 and 2 in a sealed segment
        c.upsert([1, 2, 3], np.ones((3, DIM)), [{"v": "new", "keep": False}] * 3,
                 update_filter=flt, update_mode=mode)
        got = {r.id: r.payload["v"] for r in c.retrieve([1, 2, 3])}  # type: ignore[index]
        assert got == expect
        with pytest.raises(InvalidInputError, match="update_mode"):
            c.upsert([4], np.ones((1, DIM)), update_mode="sometimes")
    finally:
        c.close()


def test_batches_apply_in_order_and_all_or_nothing(tmp_path: Path) -> None:
    db = open_database(tmp_path / "db")
    try:
        c = db.create_collection("c", DIM, "cosine", {"segment_rows": 64}, vector_name="dense",
                                 sparse={"text": SparseModifier.NONE})
        c.upsert(list(range(100)), np.ones((100, DIM)), [{"i": i} for i in range(100)])
        c.optimize()
        seq = c.batch([
            lambda c: c.upsert([200, 201], np.ones((2, DIM)), [{"i": 200}, {"i": 201}],
                               side=[{"text": {"indices": [1], "values": [1.0]}}, {}]),
            lambda c: c.set_payload([200, 5], {"tag": "x"}),
            lambda c: c.delete(ids=[201, 6]),
            lambda c: c.delete(filter={"must": [{"key": "i", "range": {"gte": 90,
                                                                       "lt": 100}}]}),
            lambda c: c.update_vectors([200], [{"text": {"indices": [2], "values": [2.0]}}]),
        ])
        assert seq > 0
        expect_ids = sorted([*range(90), 200])
        expect_ids.remove(6)

        def check(c: Collection) -> None:
            assert sorted(c.ids_matching(None)) == expect_ids
            (p200, p5) = c.retrieve([200, 5])
            assert p200.payload == {"i": 200, "tag": "x"} and p5.payload == {"i": 5, "tag": "x"}
            hits = c.search_named("text", {"indices": [2], "values": [1.0]})
            assert [(h.id, h.score) for h in hits] == [(200, 2.0)]

        check(c)
        # A failing operation leaves nothing of its batch, in memory or on disk.
        with pytest.raises(InvalidInputError):
            c.batch([lambda c: c.upsert([300], np.ones((1, DIM))),
                     lambda c: c.delete(ids=[0, 1, 2]),
                     lambda c: c.upsert([301], np.ones((1, DIM + 1)))])
        c = db.collection("c")
        check(c)
        c.upsert([400], np.ones((1, DIM)))  # still writable
        expect_ids.append(400)
        check(c)
    finally:
        db.close()
    db = open_database(tmp_path / "db")  # the batch record replays from the WAL
    try:
        check(db.collection("c"))
    finally:
        db.close()


def test_has_vector_names_the_vectors_points_carry(tmp_path: Path) -> None:
    c = Collection(tmp_path / "c", _config(), background=False)
    try:
        rng = np.random.default_rng(5)
        dense, side = _points(rng, range(150))  # every third point lacks "img"
        c.upsert(list(range(150)), dense, side=side)
        c.optimize()
        c.upsert([500], np.ones((1, DIM)))  # no side vectors at all, in the mutable segment
        c.delete_vectors([1, 2], ["text"])
        with_img = {i for i in range(150) if i % 3}
        assert set(c.ids_matching({"must": [{"has_vector": "img"}]})) == with_img
        assert set(c.ids_matching({"must_not": [{"has_vector": "text"}]})) == {1, 2, 500}
        assert len(c.ids_matching({"must": [{"has_vector": "dense"}]})) == 151
        assert c.count({"must": [{"has_vector": "img"}, {"has_vector": "text"}]}) == len(
            with_img - {1, 2})
        with pytest.raises(InvalidInputError, match="no vector named 'nope'"):
            c.count({"must": [{"has_vector": "nope"}]})
    finally:
        c.close()


def test_multivectors_score_by_max_sim(tmp_path: Path) -> None:
    rng = np.random.default_rng(21)
    config = CollectionConfig("c", DIM, Metric.COSINE, index=IndexConfig(segment_rows=64),
                              named={"colbert": DenseSpec(4, Metric.DOT, multi=True)})
    c = Collection(tmp_path / "c", config, background=False)
    try:
        mats = {i: rng.normal(size=(int(rng.integers(1, 6)), 4)).astype(np.float32)
                for i in range(150)}
        side = [{"colbert": mats[i].tolist()} if i % 5 else {} for i in range(150)]
        c.upsert(list(range(150)), rng.normal(size=(150, DIM)), side=side)
        c.optimize()
        q = rng.normal(size=(3, 4)).astype(np.float32)

        def max_sim(m: np.ndarray) -> float:
            return float((q.astype(np.float64) @ m.astype(np.float64).T).max(axis=1).sum())

        expect = {i: max_sim(m) for i, m in mats.items() if i % 5}
        hits = c.search_named("colbert", q.tolist(), k=7)
        assert [h.score for h in hits] == pytest.approx(sorted(expect.values())[::-1][:7],
                                                        rel=1e-4)
        for h in hits:
            assert expect[h.id] == pytest.approx(h.score, rel=1e-4)
        (rec,) = c.retrieve([1], with_vectors=["colbert"])
        assert isinstance(rec.vector, dict)
        assert np.allclose(rec.vector["colbert"], mats[1])
        assert set(c.ids_matching({"must": [{"has_vector": "colbert"}]})) == set(expect)
        with pytest.raises(InvalidInputError, match="multivector has 1 to"):
            c.upsert([999], np.ones((1, DIM)), side=[{"colbert": np.ones((2000, 4)).tolist()}])
    finally:
        c.close()
    with pytest.raises(InvalidInputError, match="Cosine or Dot"):
        CollectionConfig("c", DIM, Metric.COSINE, named={"m": DenseSpec(4, Metric.L2, True)})


def test_a_failed_batch_leaves_nothing_even_with_the_optimizer_running(tmp_path: Path) -> None:
    """While a batch runs, a build waits to publish; when the batch fails, that
    build must not save the batch's rows or tombstones, and writers waiting for
    the collection must see the state from before it."""
    import threading
    import time

    config = CollectionConfig("c", DIM, Metric.COSINE, index=IndexConfig(segment_rows=16))
    c = Collection(tmp_path / "c", config, background=True)
    rng = np.random.default_rng(0)
    try:
        c.upsert(list(range(10)), rng.standard_normal((10, DIM)), [{"v": "old"}] * 10)
        c.optimize()

        def grow(col: Collection) -> None:
            col.delete(ids=list(range(10)))
            col.upsert(list(range(100, 140)), rng.standard_normal((40, DIM)))

        def fail(col: Collection) -> None:
            time.sleep(0.5)  # the optimizer wakes for the 40 rows meanwhile
            raise InvalidInputError("the last operation fails")

        waiting = threading.Thread(target=lambda: (time.sleep(0.2), c.set_payload(
            [0], {"tag": "after"})))
        waiting.start()
        with pytest.raises(InvalidInputError, match="last operation"):
            c.batch([grow, fail])
        waiting.join()
        assert sorted(c.ids_matching(None)) == list(range(10))
        (p0,) = c.retrieve([0])
        assert p0.payload == {"v": "old", "tag": "after"}
    finally:
        c.close()
    c = Collection(tmp_path / "c", config, background=False)
    try:
        assert sorted(c.ids_matching(None)) == list(range(10))
    finally:
        c.close()


def test_side_vector_caps(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="255 bytes"):
        CollectionConfig("c", 1, Metric.DOT, dense=False, sparse={"\U0001f600" * 64:
                                                                   SparseModifier.NONE})
    config = CollectionConfig("c", DIM, Metric.COSINE,
                              named={"m": DenseSpec(2, Metric.DOT, multi=True)})
    c = Collection(tmp_path / "c", config, background=False)
    try:
        c.upsert([1], np.ones((1, DIM)), side=[{"m": [[1.0, 0.0], [0.0, 1.0]]}])
        with pytest.raises(InvalidInputError, match="multivector query has 1 to"):
            c.search_named("m", np.ones((2000, 2)))
        assert [h.id for h in c.search_named("m", [[1.0, 1.0]])] == [1]
    finally:
        c.close()


@pytest.mark.parametrize("datatype", ["float16", "uint8"])
def test_compact_datatypes_for_named_vectors(tmp_path: Path, datatype: str) -> None:
    rng = np.random.default_rng(9)
    metric = Metric.DOT
    config = CollectionConfig("c", DIM, Metric.COSINE, index=IndexConfig(segment_rows=64),
                              named={"v": DenseSpec(8, metric, datatype=datatype)})
    c = Collection(tmp_path / "c", config, background=False)
    try:
        if datatype == "uint8":
            vecs = rng.integers(0, 256, size=(200, 8)).astype(np.float32)
        else:
            vecs = rng.normal(size=(200, 8)).astype(np.float32)
        c.upsert(list(range(200)), np.ones((200, DIM)), side=[{"v": v.tolist()} for v in vecs])
        c.optimize()
        stored = vecs.astype(np.float16).astype(np.float64) if datatype == "float16" \
            else vecs.astype(np.float64)
        q = rng.normal(size=8).astype(np.float32)
        hits = c.search_named("v", q.tolist(), k=5)
        expect = stored @ q.astype(np.float64)
        assert [h.id for h in hits] == np.argsort(-expect)[:5].tolist()
        assert [h.score for h in hits] == pytest.approx(np.sort(expect)[::-1][:5], rel=1e-4)
        store = c.segments[0].side_store({"v": (8, datatype)}, [])
        assert store.dense["v"]._rows.view.dtype == np.dtype(datatype)
        if datatype == "uint8":
            with pytest.raises(InvalidInputError, match="whole numbers from 0 to 255"):
                c.upsert([999], np.ones((1, DIM)), side=[{"v": [0.5] * 8}])
    finally:
        c.close()


def test_declared_payload_index_seals_rows_with_side_vectors(tmp_path: Path) -> None:
    """Sealing writes declared field indexes from the rows' payloads, which sit
    behind a header in rows that carry side vectors (it once parsed the whole
    record as JSON, and the build failed)."""
    c = Collection(tmp_path / "c", _config(), background=False)
    try:
        c.create_payload_index("tag", "keyword")
        rng = np.random.default_rng(3)
        vectors, side = _points(rng, range(100))
        c.upsert(list(range(100)), vectors, [{"tag": "ab"[i % 2]} for i in range(100)],
                 side=side)
        c.optimize()
        assert all(type(s).__name__ == "SealedSegment" for s in c.segments if s.n_rows)
        flt = {"must": [{"key": "tag", "match": {"value": "b"}}]}
        assert c.count(flt) == 50
        assert {h.id for h in c.search(vectors[1], k=100, filter=flt)} == set(range(1, 100, 2))
    finally:
        c.close()
