"""The optimizer's policy: extension of the largest segment, sealing when writes
stop, the coarse partition of unindexed rows, and the status it reports."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pytest

import peregrine
from peregrine.vector.collection import optimizer as optimizer_module
from peregrine.vector.segment import coarse
from peregrine.vector.segment.mutable import MutableSegment, exact_search
from peregrine.vector.segment.sealed import SealedSegment
from peregrine.vector.types import Metric

DIM = 16


def _unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _step_until_quiet(c: peregrine.Collection) -> int:
    steps = 0
    while c._optimizer.run_step():
        steps += 1
        assert steps < 50
    return steps


def _sealed(c: peregrine.Collection) -> list[SealedSegment]:
    return [s for s in c.segments if isinstance(s, SealedSegment)]


def test_frozen_segments_extend_the_largest_one(db: peregrine.Database) -> None:
    rng = np.random.default_rng(0)
    c = db.create_collection("c", DIM, "cosine", index={"segment_rows": 100})
    c.create_payload_index("g", "integer")
    vecs = _unit(rng, 450)
    for start in range(0, 450, 50):
        c.upsert(list(range(start, start + 50)), vecs[start : start + 50],
                 [{"g": i % 7} for i in range(start, start + 50)])
        _step_until_quiet(c)
    # 400 rows went through freezes; each build grew one graph instead of adding one.
    sealed = _sealed(c)
    assert len(sealed) == 1 and sealed[0].n_rows == 400
    assert c.count() == 450 and c.count({"must": [{"key": "g", "match": {"value": 3}}]}) == len(
        [i for i in range(450) if i % 7 == 3])
    hits = c.search(vecs[123], 1, with_payload=True)
    assert hits[0].id == 123 and hits[0].payload == {"g": 123 % 7}


def test_extension_keeps_overwritten_and_deleted_points_right(db: peregrine.Database) -> None:
    """The extended segment holds old (tombstoned) and new rows of one id."""
    rng = np.random.default_rng(1)
    c = db.create_collection("c", DIM, "dot", index={"segment_rows": 64})
    c.upsert(list(range(64)), _unit(rng, 64), [{"v": 0}] * 64)
    c.optimize()
    newer = _unit(rng, 64)
    # Ten points overwritten (below the vacuum ratio), 54 new ones fill the segment.
    c.upsert([*range(10), *range(100, 154)], newer, [{"v": 1}] * 64)
    c.upsert([1000], _unit(rng, 1))  # freezes the 64 new rows
    _step_until_quiet(c)
    sealed = _sealed(c)
    assert len(sealed) == 1 and sealed[0].n_rows == 128 and sealed[0].n_deleted == 10
    assert [r.payload for r in c.retrieve([5, 9, 10])] == [{"v": 1}, {"v": 1}, {"v": 0}]
    np.testing.assert_allclose(c.retrieve([5], with_vectors=True)[0].vector, newer[5],
                               rtol=1e-6)
    assert c.count() == 119
    assert c.delete(ids=[5, 60, 999]) == 2
    assert c.count() == 117 and c.retrieve([5, 60]) == []
    assert c.search(newer[3], 1)[0].id == 3


def test_float16_graph_is_rebuilt_when_new_rows_need_float32(db: peregrine.Database) -> None:
    rng = np.random.default_rng(2)
    c = db.create_collection("c", DIM, "dot", index={"segment_rows": 64})
    c.upsert(list(range(64)), _unit(rng, 64))
    c.optimize()
    assert _sealed(c)[0].codes.value == "float16"
    huge = _unit(rng, 64) * 1e6  # float16 cannot hold these
    c.upsert(list(range(100, 164)), huge)
    c.upsert([1000], _unit(rng, 1))
    _step_until_quiet(c)
    sealed = _sealed(c)
    assert len(sealed) == 1 and sealed[0].n_rows == 128 and sealed[0].codes.value == "float32"
    assert c.search(huge[7], 1)[0].id == 107


def test_writes_stopping_seals_the_mutable_rows(db: peregrine.Database,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(optimizer_module, "IDLE_S", 0.0)
    rng = np.random.default_rng(3)
    c = db.create_collection("c", DIM, "cosine")  # 20k-row mutable segment
    few = optimizer_module.IDLE_SEAL_MIN_ROWS - 1
    c.upsert(list(range(few)), _unit(rng, few))
    assert not c._optimizer.run_step()  # too few to be worth a graph
    assert c.info().status == "green" and c.info().indexed_points == 0
    c.upsert([few], _unit(rng, 1))
    assert c.info().status == "yellow"  # now they wait for the optimizer
    _step_until_quiet(c)
    info = c.info()
    assert info.indexed_points == few + 1 and info.status == "green"
    assert info.segments == 2  # the sealed one and an empty mutable segment


def test_small_additions_get_their_own_graph_until_writes_pause(
        db: peregrine.Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(optimizer_module, "IDLE_S", 0.0)
    rng = np.random.default_rng(7)
    c = db.create_collection("c", DIM, "cosine")
    c.upsert(list(range(5_000)), _unit(rng, 5_000))
    c.optimize()
    c.upsert(list(range(5_000, 5_300)), _unit(rng, 300))  # 300 * 16 < 5,000 rows
    _step_until_quiet(c)
    assert sorted(s.n_rows for s in _sealed(c)) == [300, 5_000]  # no copy of the large one
    monkeypatch.setattr(optimizer_module, "IDLE_COMPACT_S", 0.0)
    _step_until_quiet(c)
    assert [s.n_rows for s in _sealed(c)] == [5_300] and c.count() == 5_300


def test_background_optimizer_converges_to_one_graph(tmp_path: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(optimizer_module, "IDLE_S", 0.2)
    rng = np.random.default_rng(4)
    db = peregrine.open(tmp_path / "db", background=True)
    try:
        c = db.create_collection("c", DIM, "cosine", index={"segment_rows": 500})
        vecs = _unit(rng, 3_300)
        for start in range(0, 3_300, 100):
            c.upsert(list(range(start, start + 100)), vecs[start : start + 100])
        deadline = time.monotonic() + 60
        while c.info().status != "green" and time.monotonic() < deadline:
            time.sleep(0.05)
        info = c.info()
        assert info.status == "green" and info.optimizer_error is None
        assert info.indexed_points == 3_300 and info.sealed_segments == 1
        assert c.search(vecs[2_999], 1)[0].id == 2_999
    finally:
        db.close()


def _mutable(n: int, rng: np.random.Generator, capacity: int | None = None) -> tuple[
        MutableSegment, np.ndarray]:
    # Clustered rows, like real embeddings: a coarse partition has structure to use.
    centers = _unit(rng, 40, 32)
    vecs = centers[rng.integers(0, 40, n)] + 0.3 * _unit(rng, n, 32)
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    seg = MutableSegment(1, 32, capacity or n, Metric.COSINE, 0, coarse.Centroids(32, lists=64))
    keys = np.asarray([i.to_bytes(17, "big") for i in range(n)], dtype="S17")
    seg.append(keys, vecs, [b"null"] * n)
    return seg, vecs


def _assigned(seg: MutableSegment, rows: int) -> None:
    """Search until the background worker has assigned ``rows`` rows."""
    deadline = time.monotonic() + 30
    while seg.partition.assigned < rows and time.monotonic() < deadline:
        seg.search(np.ones((1, 32), np.float32), 1, None, 64, False)
        time.sleep(0.01)
    assert seg.partition.assigned >= rows


@pytest.fixture
def small_training(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coarse, "TRAIN_ROWS", 2_000)


def test_unindexed_rows_are_probed_not_scanned_and_stay_accurate(small_training: None) -> None:
    rng = np.random.default_rng(5)
    seg, vecs = _mutable(8_000, rng)
    queries = _unit(rng, 50, 32)
    exact_s, exact_i = exact_search(vecs, queries, 10, Metric.COSINE, None)
    _assigned(seg, 8_000)
    assert seg.partition.centroids.trained
    s, i = seg.search(queries, 10, None, 16, False)  # 16 of 64 lists
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i.tolist(), exact_i.tolist(),
                                                                 strict=True)])
    assert recall >= 0.8
    np.testing.assert_allclose(s[:, 0], exact_s[:, 0], rtol=1e-5)  # scores are exact
    # exact=True and a beam wide enough to probe every list are exact.
    for ef, exact in ((64, True), (100_000, False)):
        _, j = seg.search(queries, 10, None, ef, exact)
        assert j.tolist() == exact_i.tolist()


def test_probing_respects_filters_and_new_rows(small_training: None) -> None:
    rng = np.random.default_rng(6)
    seg, vecs = _mutable(6_000, rng)
    _assigned(seg, 6_000)
    allowed = np.zeros(6_000, dtype=np.bool_)
    allowed[::2] = True
    _, i = seg.search(vecs[:20], 5, allowed, 16, False)
    assert (i % 2 == 0).all() and i.shape == (20, 5)
    tiny = np.zeros(6_000, dtype=np.bool_)
    tiny[[3, 4000]] = True  # fewer allowed rows than k: exactly those, best first
    _, j = seg.search(vecs[4000:4001], 10, tiny, 16, False)
    assert j.tolist() == [[4000, 3]]
    # Rows appended after the last assignment are scanned exactly until assigned.
    grow, more = _mutable(3_000, rng, capacity=10_000)
    _assigned(grow, 3_000)
    keys = np.asarray([i.to_bytes(17, "big") for i in range(3_000, 3_100)], dtype="S17")
    grow.append(keys, more[:100] * -1.0, [b"null"] * 100)
    _, found = grow.search(more[:10] * -1.0, 1, None, 8, False)
    assert found[:, 0].tolist() == list(range(3_000, 3_010))
    _assigned(grow, 3_100)
    _, found = grow.search(more[:10] * -1.0, 1, None, 8, False)
    assert found[:, 0].tolist() == list(range(3_000, 3_010))


def test_a_failed_publish_keeps_the_old_segments_and_removes_the_new_one(
        db: peregrine.Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Persisting the extended segment's tombstones fails (disk full): nothing is
    published, the base keeps its tombstones, no copy is left on disk."""
    rng = np.random.default_rng(8)
    c = db.create_collection("c", DIM, "dot", index={"segment_rows": 64})
    c.upsert(list(range(64)), _unit(rng, 64))
    c.optimize()
    c.delete(ids=[3, 4])
    c.upsert(list(range(100, 165)), _unit(rng, 65))  # freezes 64 rows
    base = _sealed(c)[0]
    real = SealedSegment.persist_deleted

    def failing(self: SealedSegment) -> None:
        if self is not base:
            raise OSError(28, "No space left on device")
        real(self)

    monkeypatch.setattr(SealedSegment, "persist_deleted", failing)
    with pytest.raises(OSError):
        c._optimizer.run_step()
    assert _sealed(c) == [base] and c.count() == 127 and c.retrieve([3, 4]) == []
    seg_dirs = sorted(p.name for p in (c.directory / "segments").iterdir())
    assert seg_dirs == [str(base.id)]
    monkeypatch.setattr(SealedSegment, "persist_deleted", real)
    _step_until_quiet(c)
    assert len(_sealed(c)) == 1 and c.count() == 127 and c.retrieve([3, 4]) == []


def test_small_int8_graphs_are_rebuilt_not_extended(db: peregrine.Database) -> None:
    rng = np.random.default_rng(9)
    c = db.create_collection("c", DIM, "dot", index={"segment_rows": 64,
                                                     "quantization": "int8"})
    c.upsert(list(range(64)), _unit(rng, 64))
    c.optimize()
    first = _sealed(c)[0]
    far = 10 * _unit(rng, 65)
    c.upsert(list(range(100, 165)), far)  # far outside first's ranges
    _step_until_quiet(c)
    sealed = _sealed(c)
    # A fresh build (retrained on all rows), not base + rows: 128 live rows, no copy.
    assert len(sealed) == 1 and sealed[0] is not first and sealed[0].n_rows == 128
    assert c.search(far[64], 1)[0].id == 164


def test_a_segment_holding_a_live_key_twice_is_refused(db: peregrine.Database) -> None:
    rng = np.random.default_rng(10)
    c = db.create_collection("c", DIM, "dot", index={"segment_rows": 64})
    c.upsert(list(range(64)), _unit(rng, 64))
    c.optimize()
    c.upsert([*range(5), *range(200, 259)], _unit(rng, 64))  # 5 overwritten
    c.upsert([1000], _unit(rng, 1))
    _step_until_quiet(c)
    seg = _sealed(c)[0]
    seg.check_keys()  # the old rows of 0..4 are tombstoned: fine
    seg.deleted[:] = False  # as a crafted snapshot could have it
    with pytest.raises(peregrine.StorageError, match="twice"):
        seg.check_keys()


def test_small_payload_blobs_cost_bytes_not_kilobytes() -> None:
    """orjson backs each result with >= 4 KB; the stored blob must not keep that."""
    import tracemalloc

    from peregrine.vector.collection.codec import encode_payload

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        blobs = [encode_payload({"bucket": i}) for i in range(2_000)]
        per_blob = (tracemalloc.get_traced_memory()[0] - before) / len(blobs)
    finally:
        tracemalloc.stop()
    assert per_blob < 200, per_blob
    assert blobs[5] == b'{"bucket":5}'


def test_a_truncated_vector_file_is_a_storage_error_not_garbage(
        db: peregrine.Database) -> None:
    rng = np.random.default_rng(11)
    c = db.create_collection("c", DIM, "dot")
    vecs = _unit(rng, 300)
    c.upsert(list(range(300)), vecs)
    c.optimize()
    seg = _sealed(c)[0]
    assert seg.codes.value == "float16"  # hits are rescored from vectors.npy
    path = seg.directory / "vectors.npy"
    os.truncate(path, path.stat().st_size - 150 * DIM * 4)
    with pytest.raises(peregrine.StorageError, match="shorter"):
        for q in vecs[150:]:  # some hit lies in the cut-off rows
            c.search(q, 5)
