"""Stateful property test: random operation sequences against an in-memory oracle.

The oracle is a dict id -> (stored vector, payload). Exact search must be a
correct (tie-aware) top-k of the oracle's brute force; ANN search must return
live, matching points with exact scores, and reach an average tie-aware recall
of at least 0.8. Sequences mix upserts with overwrites, deletes by id and by
filter, payload edits, optimize, and close/reopen.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from vutil import METRICS, canon, check_topk, oracle_scores, stored_vector, tie_aware_recall

import peregrine

DIM = 6
UUIDS = [
    "0b6f3c8e-2a51-4d4e-9a57-6f0e4a8d1c01",
    "7d1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6",
    "ffffffff-0000-4000-8000-000000000000",
    "00000000-0000-4000-8000-000000000001",
]
POOL: list[Any] = [*range(28), 2**64 - 1, *UUIDS]
GROUPS = [0, 1, 2]

ids_st = st.lists(st.sampled_from(POOL), min_size=1, max_size=18, unique=True)
payload_st = st.one_of(
    st.none(),
    st.fixed_dictionaries({"g": st.sampled_from(GROUPS)},
                          optional={"t": st.sampled_from(["x", "y"]), "n": st.integers(-3, 3)}),
)
filter_st = st.one_of(
    st.none(),
    st.builds(lambda g: {"must": [{"key": "g", "match": {"value": g}}]}, st.sampled_from(GROUPS)),
    st.builds(lambda g: {"must_not": [{"key": "g", "match": {"value": g}}]},
              st.sampled_from(GROUPS)),
    st.builds(lambda n: {"should": [{"key": "n", "range": {"gte": n}}, {"is_empty": {"key": "g"}}]},
              st.integers(-3, 3)),
    st.builds(lambda ids: {"must": [{"has_id": ids}]}, st.lists(st.sampled_from(POOL), max_size=8)),
)


def _matches(payload: Any, pid: Any, flt: dict[str, Any] | None) -> bool:
    """Reference for the few filter shapes filter_st produces."""
    if flt is None:
        return True
    p = payload or {}
    if "must" in flt:
        cond = flt["must"][0]
        if "has_id" in cond:
            return pid in {canon(i) for i in cond["has_id"]}
        return p.get("g") == cond["match"]["value"]
    if "must_not" in flt:
        return p.get("g") != flt["must_not"][0]["match"]["value"]
    lo = flt["should"][0]["range"]["gte"]
    return ("n" in p and p["n"] >= lo) or "g" not in p


def _vectors(seed: int, n: int, metric: str) -> np.ndarray:
    """Small integer grids (exact float32 arithmetic, plenty of ties and duplicates)."""
    rng = np.random.default_rng(seed)
    v = rng.integers(-3, 4, size=(n, DIM)).astype(np.float32)
    if metric == "cosine":
        v[np.all(v == 0, axis=1), 0] = 1.0  # keep cosine away from the zero vector
    return v


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="peregrine-prop-")
        self.db: peregrine.Database | None = None
        self.model: dict[Any, tuple[np.ndarray, Any]] = {}
        self.recall = [0, 0]

    @initialize(metric=st.sampled_from(METRICS), segment_rows=st.sampled_from([16, 24]),
                full_scan=st.sampled_from([0, 10_000]), background=st.booleans(),
                quant=st.sampled_from(["none", "int8"]))
    def setup(self, metric: str, segment_rows: int, full_scan: int, background: bool,
              quant: str) -> None:
        self.metric, self.background = metric, background
        if metric == "l1":
            quant = "none"  # int8 graphs have no Manhattan distance (refused)
        self.db = peregrine.open(self.tmp, fsync="never", background=background)
        self.c = self.db.create_collection("p", DIM, metric, index={
            "segment_rows": segment_rows, "max_segments": 2, "full_scan_threshold": full_scan,
            "m": 8, "ef_construction": 32, "ef": 32, "quantization": quant})

    # ------------------------------------------------------------------ writes
    @rule(ids=ids_st, seed=st.integers(0, 2**32 - 1), data=st.data())
    def upsert(self, ids: list[Any], seed: int, data: st.DataObject) -> None:
        vecs = _vectors(seed, len(ids), self.metric)
        payloads = data.draw(st.one_of(st.none(), st.lists(payload_st, min_size=len(ids),
                                                            max_size=len(ids))))
        self.c.upsert(ids, vecs, payloads)
        for i, pid in enumerate(ids):
            self.model[canon(pid)] = (stored_vector(self.metric, vecs[i]),
                                      None if payloads is None else payloads[i])

    @rule(ids=st.lists(st.sampled_from(POOL), max_size=10))
    def delete_ids(self, ids: list[Any]) -> None:
        live = {canon(i) for i in ids} & set(self.model)
        assert self.c.delete(ids=ids) == len(live)
        for pid in live:
            del self.model[pid]

    @rule(flt=filter_st.filter(lambda f: f is not None))
    def delete_filter(self, flt: dict[str, Any]) -> None:
        gone = [pid for pid, (_, p) in self.model.items() if _matches(p, pid, flt)]
        assert self.c.delete(filter=flt) == len(gone)
        for pid in gone:
            del self.model[pid]

    @rule(ids=st.lists(st.sampled_from(POOL), min_size=1, max_size=6),
          g=st.sampled_from(GROUPS), overwrite=st.booleans())
    def set_payload(self, ids: list[Any], g: int, overwrite: bool) -> None:
        self.c.set_payload(ids, {"g": g}, overwrite=overwrite)
        for pid in {canon(i) for i in ids} & set(self.model):
            vec, old = self.model[pid]
            self.model[pid] = (vec, {"g": g} if overwrite else {**(old or {}), "g": g})

    @rule()
    def optimize(self) -> None:
        self.c.optimize()
        info = self.c.info()
        assert info.unindexed_points == 0 and info.sealed_segments <= 1

    @rule()
    def reopen(self) -> None:
        assert self.db is not None
        self.db.close()
        self.db = peregrine.open(self.tmp, fsync="never", background=self.background)
        self.c = self.db.collection("p")

    # ------------------------------------------------------------------- reads
    @rule(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 12), flt=filter_st)
    def search_exact(self, seed: int, k: int, flt: dict[str, Any] | None) -> None:
        q = _vectors(seed, 1, self.metric)[0]
        allowed = {pid: v for pid, (v, p) in self.model.items() if _matches(p, pid, flt)}
        oracle = oracle_scores(self.metric, q, allowed)
        hits = self.c.search(q, k=k, filter=flt, exact=True, with_payload=True)
        check_topk(hits, oracle, k, self.metric)
        for h in hits:
            assert h.payload == (self.model[h.id][1] or {})  # no payload reads as {}

    @rule(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 12), flt=filter_st)
    def search_ann(self, seed: int, k: int, flt: dict[str, Any] | None) -> None:
        q = _vectors(seed, 1, self.metric)[0]
        allowed = {pid: v for pid, (v, p) in self.model.items() if _matches(p, pid, flt)}
        oracle = oracle_scores(self.metric, q, allowed)
        hits = self.c.search(q, k=k, filter=flt)
        ids = [h.id for h in hits]
        assert len(ids) == len(set(ids)) and len(ids) <= min(k, len(allowed))
        for h in hits:
            assert h.id in oracle, h.id
            assert abs(h.score - oracle[h.id]) <= 1e-3
        good, wanted = tie_aware_recall(hits, oracle, k, self.metric)
        self.recall[0] += good
        self.recall[1] += wanted

    @rule(flt=filter_st)
    def count(self, flt: dict[str, Any] | None) -> None:
        want = sum(1 for pid, (_, p) in self.model.items() if _matches(p, pid, flt))
        assert self.c.count(flt) == want

    @precondition(lambda self: self.db is not None)
    @invariant()
    def contents_match(self) -> None:
        assert self.c.count() == len(self.model)
        recs, nxt = self.c.scroll(limit=100, with_vectors=True)
        assert nxt is None
        assert {r.id for r in recs} == set(self.model)
        for r in recs:
            vec, payload = self.model[r.id]
            assert r.payload == (payload or {})
            np.testing.assert_allclose(r.vector, vec, atol=1e-6)

    def teardown(self) -> None:
        try:
            if self.recall[1] >= 30:
                assert self.recall[0] / self.recall[1] >= 0.8, self.recall
        finally:
            if self.db is not None:
                self.db.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.mark.slow
def test_store_matches_oracle() -> None:
    run_state_machine_as_test(StoreMachine, settings=settings(
        max_examples=40, stateful_step_count=30, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ))
