"""Readers and writers at once, with the background optimizer sealing and merging.

Writers own disjoint id ranges, so the final state is deterministic: each
writer keeps its own oracle. A point's vector is a pure function of
(id, version) and its payload records both, so any mix-up between rows,
segments or versions during a swap shows as a payload/vector mismatch.
Ids are never reused after a delete, which lets readers assert that a point
deleted before their search started is never returned.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from vutil import assert_same_points, dump

import peregrine

DIM = 8
N_WRITERS = 2
RANGE = 100_000  # writer w owns ids [w * RANGE, (w + 1) * RANGE)


def vec_of(pid: int, version: int) -> np.ndarray:
    x = np.arange(DIM, dtype=np.float64)
    return np.sin(x * 0.7 + pid * 0.013 + version * 1.3).astype(np.float32) + np.float32(0.1)


class Shared:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.deleted: set[int] = set()  # deletions that have returned
        self.stable: dict[int, int] = {}  # id -> version, acknowledged and never touched again
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.searches = 0


def _guard(shared: Shared, fn: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            shared.errors.append(exc)
            shared.stop.set()
    return run


def writer(c: peregrine.Collection, shared: Shared, w: int, n_ops: int,
           model: dict[int, int]) -> None:
    r = random.Random(w)
    next_id = w * RANGE
    live: list[int] = []
    for _ in range(n_ops):
        if shared.stop.is_set():
            return
        x = r.random()
        if x < 0.55 or len(live) < 20:
            ids = list(range(next_id, next_id + r.randint(1, 40)))
            next_id += len(ids)
            c.upsert(ids, np.stack([vec_of(i, 0) for i in ids]),
                     [{"id": i, "v": 0, "w": w} for i in ids])
            model.update(dict.fromkeys(ids, 0))
            live += ids
            # read-your-writes inside the writer
            assert len(c.retrieve(ids[:5])) == len(ids[:5])
            with shared.lock:
                shared.stable.update({i: 0 for i in ids[len(ids) // 2:]})
        elif x < 0.75:  # overwrite some live points with a new version
            ids = r.sample(live, min(len(live), r.randint(1, 15)))
            with shared.lock:
                for i in ids:
                    shared.stable.pop(i, None)
            vers = [model[i] + 1 for i in ids]
            c.upsert(ids, np.stack([vec_of(i, v) for i, v in zip(ids, vers, strict=True)]),
                     [{"id": i, "v": v, "w": w} for i, v in zip(ids, vers, strict=True)])
            model.update(zip(ids, vers, strict=True))
        elif x < 0.9:  # delete by ids
            ids = r.sample(live, min(len(live), r.randint(1, 10)))
            with shared.lock:
                for i in ids:
                    shared.stable.pop(i, None)
            assert c.delete(ids=ids) == len(ids)
            for i in ids:
                live.remove(i)
                del model[i]
            with shared.lock:
                shared.deleted.update(ids)
        else:  # delete by filter (a has_id filter restricted to this writer)
            ids = r.sample(live, min(len(live), r.randint(1, 10)))
            with shared.lock:
                for i in ids:
                    shared.stable.pop(i, None)
            flt = {"must": [{"has_id": ids}, {"key": "w", "match": {"value": w}}]}
            assert c.delete(filter=flt) == len(ids)
            for i in ids:
                live.remove(i)
                del model[i]
            with shared.lock:
                shared.deleted.update(ids)


def reader(c: peregrine.Collection, shared: Shared, seed: int) -> None:
    r = random.Random(seed)
    rng = np.random.default_rng(seed)
    while not shared.stop.is_set():
        with shared.lock:
            dead = set(shared.deleted)
            sample = r.sample(sorted(shared.stable.items()), min(8, len(shared.stable)))
        q = rng.standard_normal(DIM).astype(np.float32)
        mode = r.random()
        one_query = True  # several queries' hits may share points
        if mode < 0.4:
            hits = c.search(q, k=r.randint(1, 30), exact=r.random() < 0.3, with_vectors=True)
        elif mode < 0.6:
            flt = {"must": [{"key": "w", "match": {"value": r.randrange(N_WRITERS)}}]}
            hits = c.search(q, k=20, filter=flt, with_vectors=True)
        elif mode < 0.8 and sample:
            # every acknowledged, untouched point is visible to a search started later
            ids = [i for i, _ in sample]
            hits = c.search(q, k=len(ids), filter={"must": [{"has_id": ids}]},
                            exact=r.random() < 0.5, with_vectors=True)
            with shared.lock:
                still = {i for i in ids if i in shared.stable}
            assert still <= {h.id for h in hits}, (still, [h.id for h in hits])
        else:  # also the has_id branch's fallback while nothing is stable yet
            one_query = False
            batch = c.search_batch(rng.standard_normal((3, DIM)), k=10, with_vectors=True)
            hits = [h for hs in batch for h in hs]
            for hs in batch:
                assert len({h.id for h in hs}) == len(hs)
        ids = [h.id for h in hits]
        if one_query:
            assert len(ids) == len(set(ids)), ids
        assert not dead & set(ids), dead & set(ids)
        for h in hits:
            assert h.payload["id"] == h.id
            np.testing.assert_allclose(h.vector, vec_of(h.id, h.payload["v"]), atol=1e-6)
        if r.random() < 0.1:
            recs, _ = c.scroll(limit=50, offset=r.randrange(N_WRITERS * RANGE))
            rids = [rec.id for rec in recs]
            assert rids == sorted(set(rids)) and not dead & set(rids)
            c.count({"must": [{"key": "v", "match": {"value": 0}}]})
        shared.searches += 1


def optimizer_thread(c: peregrine.Collection, shared: Shared) -> None:
    while not shared.stop.wait(0.15):
        c.optimize()


@pytest.mark.parametrize(("with_optimize_calls", "layout"),
                         [(False, False), (True, False), (True, True)])
def test_concurrent_reads_writes_and_sealing(open_db: Any, with_optimize_calls: bool,
                                             layout: bool) -> None:
    """``layout``: builds lay rows out by a principal field (the version), so
    builds permute their rows, and the tombstones of deletes that land during a
    build must follow the permutation."""
    db = open_db(background=True)
    c = db.create_collection("c", DIM, "dot", index={
        "segment_rows": 64, "max_segments": 2, "m": 8, "ef_construction": 32})
    if layout:
        c.create_payload_index("v", "integer", layout="principal")
    shared = Shared()
    models: list[dict[int, int]] = [{} for _ in range(N_WRITERS)]
    writers = [threading.Thread(target=_guard(shared, lambda w=w: writer(c, shared, w, 220,
                                                                        models[w])))
               for w in range(N_WRITERS)]
    others = [threading.Thread(target=_guard(shared, lambda s=s: reader(c, shared, s)))
              for s in range(3)]
    if with_optimize_calls:
        others.append(threading.Thread(target=_guard(shared, lambda: optimizer_thread(c, shared))))
    for t in writers + others:
        t.start()
    for t in writers:
        t.join(timeout=120)
    shared.stop.set()
    for t in others:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in writers + others), "a thread hung (deadlock?)"
    if shared.errors:
        raise shared.errors[0]
    assert shared.searches > 50

    want = {i: ({"id": i, "v": v, "w": w}, tuple(vec_of(i, v)))
            for w, m in enumerate(models) for i, v in m.items()}
    assert c.count() == len(want)
    assert_same_points(dump(c), want)
    assert c.info().sealed_segments >= 1
    c.optimize()
    assert_same_points(dump(c), want)
    db.close()
    c = open_db().collection("c")
    assert_same_points(dump(c), want)


def test_reader_checks_hold_before_anything_is_stable(open_db: Any) -> None:
    """The reader's own checks on a quiet collection whose points are not yet
    marked stable: its has_id branch then falls back to a batch search, whose
    three result lists may share points (this once failed CI spuriously)."""
    db = open_db()
    c = db.create_collection("c", DIM, "dot", index={"segment_rows": 64})
    ids = list(range(27))
    c.upsert(ids, np.stack([vec_of(i, 0) for i in ids]), [{"id": i, "v": 0, "w": 0} for i in ids])
    for seed in range(3):
        shared = Shared()
        thread = threading.Thread(
            target=_guard(shared, lambda s=seed, sh=shared: reader(c, sh, s)))
        thread.start()
        while shared.searches < 40 and thread.is_alive():
            shared.stop.wait(0.01)
        shared.stop.set()
        thread.join(timeout=30)
        if shared.errors:
            raise shared.errors[0]


def test_parallel_searches_agree_with_serial(open_db: Any) -> None:
    """Shared-lock readers (FAISS and numpy drop the GIL) return what a lone reader does."""
    db = open_db()
    c = db.create_collection("c", DIM, "cosine", index={"segment_rows": 128})
    rng = np.random.default_rng(3)
    c.upsert(list(range(600)), rng.standard_normal((600, DIM)), [{"m": i % 3} for i in range(600)])
    c.optimize()
    c.upsert(list(range(600, 700)), rng.standard_normal((100, DIM)), [{"m": 1}] * 100)
    queries = rng.standard_normal((40, DIM)).astype(np.float32)
    flt = {"must": [{"key": "m", "match": {"value": 1}}]}
    serial = [(c.search(q, k=10), c.search(q, k=10, filter=flt)) for q in queries]
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for _ in range(3):
                for n, q in enumerate(queries):
                    got = (c.search(q, k=10), c.search(q, k=10, filter=flt))
                    results.setdefault(n, got)
                    assert [h.id for h in got[0]] == [h.id for h in serial[n][0]]
                    assert [h.id for h in got[1]] == [h.id for h in serial[n][1]]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    if errors:
        raise errors[0]
