"""Shortcuts of the search hot path: tombstone counts, decoded id columns, huge pages."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

import peregrine
from peregrine.runtime import hugepages


def _tombstones_in_step(c: peregrine.Collection) -> None:
    for seg in c.segments:
        assert seg.n_deleted == int(np.count_nonzero(seg.deleted[: seg.n_rows])), seg


def test_tombstone_count_follows_deletes_overwrites_optimize_and_reopen(db_path: Path) -> None:
    rng = np.random.default_rng(5)
    vecs = rng.standard_normal((140, 8)).astype(np.float32)
    with peregrine.open(db_path) as db:
        c = db.create_collection("c", 8, "dot", index={"segment_rows": 32})
        c.upsert(list(range(100)), vecs[:100])
        c.optimize()
        c.upsert(list(range(100, 140)), vecs[100:])
        _tombstones_in_step(c)
        assert all(seg.n_deleted == 0 for seg in c.segments)
        assert c.delete(ids=[1, 1, 2, 120, 120]) == 3  # a point named twice counts once
        c.upsert([3, 130], vecs[:2])  # overwrites tombstone the old rows
        _tombstones_in_step(c)
        live = set(range(140)) - {1, 2, 120}
        for exact in (True, False):
            assert {h.id for h in c.search(vecs[0], k=200, exact=exact)} <= live
        assert {h.id for h in c.search(vecs[0], k=200, exact=True)} == live
        c.optimize()
        _tombstones_in_step(c)
    with peregrine.open(db_path) as db:
        c = db.collection("c")
        _tombstones_in_step(c)
        assert {h.id for h in c.search(vecs[0], k=200, exact=True)} == live


@pytest.mark.parametrize("with_uuids", [False, True])
def test_sealed_segments_return_the_stored_ids(db: peregrine.Database, with_uuids: bool) -> None:
    ids: list[Any] = [0, 7, 2**32, 2**63, 2**64 - 1, *range(100, 140)]
    if with_uuids:
        ids += ["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"]
    rng = np.random.default_rng(6)
    vecs = rng.standard_normal((len(ids), 8)).astype(np.float32)
    c = db.create_collection("c", 8, "cosine")
    c.upsert(ids, vecs)
    unsealed = [(h.id, h.score) for h in c.search(vecs[1], k=len(ids), exact=True)]
    c.optimize()
    assert all(type(seg).__name__ == "SealedSegment" for seg in c.segments if seg.n_rows)
    assert [(h.id, h.score) for h in c.search(vecs[1], k=len(ids), exact=True)] == unsealed
    hnsw = c.search(vecs[1], k=10)
    assert {h.id for h in hnsw} <= set(ids)
    assert all(type(h.id) is type(ids[ids.index(h.id)]) for h in hnsw)
    assert [type(i) for i, _ in unsealed].count(str) == (2 if with_uuids else 0)
    assert c.search(vecs[4], k=1, exact=True)[0].id == 2**64 - 1


@pytest.mark.skipif(sys.platform != "linux", reason="transparent huge pages are Linux's")
def test_huge_pages_leave_an_index_answering_the_same() -> None:
    rng = np.random.default_rng(7)
    data = rng.standard_normal((6000, 384)).astype(np.float32)
    index = faiss.IndexHNSWFlat(384, 8, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 16
    index.add(data)
    before = index.search(data[:50], 10)
    buffers = hugepages.index_buffers(index, faiss)
    assert [size for _, size in buffers] == [6000 * 384 * 4]  # neighbour lists: too small
    address, size = buffers[0]
    assert isinstance(hugepages.collapse(address, size), bool)  # False where THP is off
    after = index.search(data[:50], 10)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])


def test_huge_pages_skip_small_empty_and_other_indexes() -> None:
    flat = faiss.IndexFlatIP(384)
    flat.add(np.zeros((20000, 384), dtype=np.float32))  # 29 MiB, but not an HNSW index
    assert hugepages.index_buffers(flat, faiss) == []
    assert hugepages.index_buffers(faiss.IndexHNSWFlat(384, 16), faiss) == []  # empty


def test_huge_pages_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEREGRINE_RUNTIME_HUGE_PAGES", "0")
    assert not hugepages.enabled()
    hugepages.back_with_huge_pages([(4096, 1 << 30)])  # would be refused if it ran
    assert hugepages._pending.empty()


class _ShortWalk:
    """Stands in for a FAISS index whose graph walk reaches only half of k nodes."""

    def __init__(self, index: Any) -> None:
        self.index = index

    def search(self, x: np.ndarray, k: int, params: Any = None) -> tuple[np.ndarray, np.ndarray]:
        distances, labels = self.index.search(x, k, params=params)
        labels[:, k // 2:] = -1
        return distances, labels


def test_short_unfiltered_walk_falls_back_to_exact(db: peregrine.Database) -> None:
    rng = np.random.default_rng(8)
    vecs = rng.standard_normal((300, 8)).astype(np.float32)
    c = db.create_collection("c", 8, "l2")
    c.upsert(list(range(300)), vecs)
    c.optimize()
    (seg,) = [s for s in c.segments if s.n_rows]
    seg.index = _ShortWalk(seg.index)  # type: ignore[union-attr]
    exact = [h.id for h in c.search(vecs[3], k=10, exact=True)]
    assert [h.id for h in c.search(vecs[3], k=10)] == exact  # 10 hits, not 5
