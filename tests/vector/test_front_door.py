"""The vector face's front door: caps, typed results, deadlines, stopping builds."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import peregrine
from peregrine.core.deadline import deadline
from peregrine.core.errors import DeadlineExceededError, InvalidInputError
from peregrine.vector.service import (
    CollectionInfo,
    Mmr,
    NearestQuery,
    PointSelector,
    ReadOptions,
    RecommendQuery,
    VectorService,
    VectorSettings,
)


@pytest.fixture
def vector(tmp_path: Path) -> Any:
    service = VectorService.open(tmp_path, VectorSettings(max_batch=50, max_limit=40, max_ef=128))
    service.create_collection("c", 4, "cosine")
    rng = np.random.default_rng(0)
    service.upsert("c", list(range(30)), rng.standard_normal((30, 4)),
                   [{"g": i % 3} for i in range(30)])
    yield service
    service.close()


@pytest.mark.parametrize(("call", "limit"), [
    (lambda v: v.search("c", [1, 0, 0, 0], ReadOptions(limit=41)), "max_limit"),
    (lambda v: v.search("c", [1, 0, 0, 0], ReadOptions(limit=10, offset=31)), "max_limit"),
    (lambda v: v.search("c", [1, 0, 0, 0], ReadOptions(ef=129)), "max_ef"),
    (lambda v: v.upsert("c", list(range(51)), np.ones((51, 4))), "max_batch"),
    (lambda v: v.retrieve("c", list(range(51))), "max_batch"),
    (lambda v: v.delete("c", PointSelector(ids=list(range(51)))), "max_batch"),
    (lambda v: v.clear_payload("c", PointSelector(ids=list(range(51)))), "max_batch"),
    (lambda v: v.search_batch("c", [([1, 0, 0, 0], ReadOptions())] * 51), "max_batch"),
    (lambda v: v.query("c", NearestQuery(np.ones(4, np.float32), Mmr(0.5, 41)),
                       ReadOptions()), "max_limit"),
    (lambda v: v.recommend("c", RecommendQuery([1] * 51), ReadOptions()), "max_batch"),
    (lambda v: v.count("c", {"must": [{"has_id": list(range(10_001))}]}), "ids or values"),
], ids=["limit", "offset", "ef", "upsert", "retrieve", "delete", "clear", "batch", "mmr",
        "examples", "filter values"])
def test_every_size_a_request_controls_has_a_cap(vector: VectorService, call: Any,
                                                 limit: str) -> None:
    with pytest.raises(InvalidInputError, match=limit):
        call(vector)
    assert vector.count("c") == 30


def test_results_are_typed(vector: VectorService) -> None:
    info = vector.collection_info("c")
    assert isinstance(info, CollectionInfo)
    assert (info.points, info.indexed_points, info.unindexed_points) == (30, 0, 30)
    hits = vector.query("c", NearestQuery(3), ReadOptions(limit=5, with_payload=True))
    assert len(hits) == 5 and 3 not in {h.id for h in hits}  # the example is left out
    assert all(h.payload is not None and "g" in h.payload for h in hits)


def test_indexed_count_stays_within_the_points(tmp_path: Path) -> None:
    db = peregrine.open(tmp_path, background=False)
    c = db.create_collection("c", 4, "dot", index={"segment_rows": 16})
    c.upsert(list(range(40)), np.ones((40, 4)))
    c.optimize()
    c.delete(ids=list(range(10)))
    c.set_payload(list(range(10, 20)), {"x": 1})  # re-upserts: leaves the index
    info = c.info()
    assert info.points == 30
    assert info.indexed_points == 20 and info.unindexed_points == 10
    db.close()


def test_a_passed_deadline_stops_engine_work(vector: VectorService) -> None:
    flt = {"should": [{"key": "g", "match": {"value": k}} for k in range(500)]}
    with deadline(time.perf_counter() - 1), pytest.raises(DeadlineExceededError):
        vector.count("c", flt)
    with deadline(time.perf_counter() - 1), pytest.raises(DeadlineExceededError):
        vector.search("c", [1, 0, 0, 0], ReadOptions(filter=flt))
    assert vector.count("c", flt) == 30  # without one, the same work completes


def test_closing_does_not_wait_for_a_long_build(tmp_path: Path) -> None:
    db = peregrine.open(tmp_path)  # with the background optimizer
    c = db.create_collection("c", 96, "dot", index={"segment_rows": 30_000,
                                                    "m": 48, "ef_construction": 500})
    rng = np.random.default_rng(0)
    c.upsert(list(range(30_000)), rng.standard_normal((30_000, 96)).astype(np.float32))
    c.upsert([30_000], np.ones((1, 96)))  # the first segment is full: its build starts
    deadline_at = time.monotonic() + 30
    while not any(p.name.endswith(".tmp") for p in (c.directory / "segments").iterdir()):
        assert time.monotonic() < deadline_at, "no build started"
        time.sleep(0.01)
    time.sleep(1.0)  # well into the graph build (it takes several seconds)
    started = time.monotonic()
    closer = threading.Thread(target=db.close)
    closer.start()
    closer.join(10)
    assert not closer.is_alive()
    assert time.monotonic() - started < 3  # the build stopped within one chunk
    reopened = peregrine.open(tmp_path, background=False)
    assert reopened.collection("c").count() == 30_001  # nothing lost: it is in the WAL
    assert not any(p.name.endswith(".tmp")
                   for p in (tmp_path / "collections" / "c" / "segments").iterdir())
    reopened.close()
