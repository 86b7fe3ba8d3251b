"""Property tests against oracles: sparse search under random operation
sequences, score fusion against qdrant-client's own fusion functions, and
grouping against a plain-Python grouping of the same ranked hits.

The sparse oracle is a dict id -> {index: value}; a sparse search (plain dot
product, and with IDF over the live points) must return exactly the oracle's
top-k scores, only points sharing an index with the query, each with its
oracle score. Sequences mix upserts, overwrites, deletes, vector deletes,
payload edits, optimize and reopen, so points move between mutable and
sealed segments.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from qdrant_client.http import models
from qdrant_client.hybrid.fusion import distribution_based_score_fusion, reciprocal_rank_fusion

import peregrine
from peregrine.vector.service import Hit
from peregrine.vector.types import SparseModifier
from peregrine.vector.universal import fuse

VOCAB = 12
sparse_st = st.dictionaries(st.integers(0, VOCAB - 1),
                            st.floats(0.0625, 4, allow_nan=False).map(lambda v: round(v, 2)),
                            max_size=5)
ids_st = st.lists(st.integers(0, 40), min_size=1, max_size=12, unique=True)


class SparseMachine(RuleBasedStateMachine):
    @initialize()
    def open(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="pg-sparse-prop-")
        self.db = peregrine.open(self.dir, background=False)
        self.c = self.db.create_collection("p", 2, "dot", index={"segment_rows": 16},
                                           sparse={"s": SparseModifier.NONE,
                                                   "t": SparseModifier.IDF})
        self.oracle: dict[int, dict[int, float]] = {}

    def teardown(self) -> None:
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(ids=ids_st, data=st.data())
    def upsert(self, ids: list[int], data: st.DataObject) -> None:
        rows = [data.draw(sparse_st) for _ in ids]
        side = [{"s": {"indices": list(r), "values": list(r.values())},
                 "t": {"indices": list(r), "values": list(r.values())}} if r else {}
                for r in rows]
        self.c.upsert(ids, np.ones((len(ids), 2)), [{"g": i % 2} for i in ids], side=side)
        for i, r in zip(ids, rows, strict=True):
            self.oracle[i] = {k: float(np.float32(v)) for k, v in r.items()}

    @rule(ids=ids_st)
    def delete(self, ids: list[int]) -> None:
        self.c.delete(ids=ids)
        for i in ids:
            self.oracle.pop(i, None)

    @rule(ids=ids_st)
    def drop_vectors(self, ids: list[int]) -> None:
        self.c.delete_vectors(ids, ["s", "t"])
        for i in ids:
            if i in self.oracle:
                self.oracle[i] = {}

    @rule(ids=ids_st)
    def edit_payload(self, ids: list[int]) -> None:
        self.c.set_payload(ids, {"edited": True})

    @rule()
    def optimize(self) -> None:
        self.c.optimize()

    @rule()
    def reopen(self) -> None:
        self.db.close()
        self.db = peregrine.open(self.dir, background=False)
        self.c = self.db.collection("p")

    @invariant()
    def searches_match_the_oracle(self) -> None:
        if not hasattr(self, "c"):
            return
        rng = np.random.default_rng(len(self.oracle))
        query = {int(i): 1.0 + j for j, i in enumerate(rng.choice(VOCAB, 3, replace=False))}
        live = len(self.oracle)
        for name, idf in (("s", False), ("t", True)):
            expect: dict[int, float] = {}
            for pid, row in self.oracle.items():
                shared = set(row) & set(query)
                if not shared:
                    continue
                score = 0.0
                for d in shared:
                    df = sum(1 for r in self.oracle.values() if d in r)
                    w = math.log((live - df + 0.5) / (df + 0.5) + 1) if idf else 1.0
                    score += row[d] * query[d] * w
                expect[pid] = score
            hits = self.c.search_named(name, {"indices": list(query),
                                              "values": list(query.values())}, k=8,
                                       with_payload=False)
            best = sorted(expect.values(), reverse=True)[:8]
            assert [h.score for h in hits] == pytest.approx(best, rel=1e-4, abs=1e-5)
            for h in hits:
                assert expect[h.id] == pytest.approx(h.score, rel=1e-4, abs=1e-5)


def test_sparse_search_under_random_operations() -> None:
    run_state_machine_as_test(SparseMachine, settings=settings(
        max_examples=25, stateful_step_count=12, deadline=None,
        suppress_health_check=[HealthCheck.too_slow]))


ranking_st = st.lists(st.tuples(st.integers(0, 30), st.floats(-5, 5, allow_nan=False)),
                      max_size=12, unique_by=lambda t: t[0])


@given(st.lists(ranking_st, min_size=1, max_size=4), st.sampled_from(["rrf", "dbsf"]))
@settings(max_examples=200, deadline=None)
def test_fusion_matches_qdrant_client(rankings: list[list[tuple[int, float]]],
                                      method: str) -> None:
    """Each ranking best first, as a prefetch returns it."""
    sources = [[Hit(pid, score) for pid, score in sorted(r, key=lambda t: -t[1])]
               for r in rankings]
    ours = fuse(method, sources, limit=100)
    theirs_in = [[models.ScoredPoint(id=h.id, version=0, score=h.score) for h in hits]
                 for hits in sources]
    theirs = (reciprocal_rank_fusion(theirs_in, limit=100) if method == "rrf"
              else distribution_based_score_fusion(theirs_in, limit=100))
    want: dict[Any, float] = {p.id: p.score for p in theirs}
    assert {h.id for h in ours} == set(want)
    for h in ours:
        assert h.score == pytest.approx(want[h.id], rel=1e-6, abs=1e-9)
    assert [h.score for h in ours] == sorted((h.score for h in ours), reverse=True)


hit_st = st.lists(st.tuples(st.integers(0, 60), st.floats(-3, 3, allow_nan=False),
                            st.one_of(st.none(), st.sampled_from(["a", "b", "c", 1, 2]),
                                      st.lists(st.sampled_from(["a", "b", 1]), max_size=3))),
                  max_size=60, unique_by=lambda t: t[0])


@given(hit_st, st.integers(1, 4), st.integers(1, 4), st.integers(10, 400))
@settings(max_examples=200, deadline=None)
def test_grouping_matches_an_oracle(rows: list[tuple[int, float, Any]], limit: int,
                                    group_size: int, cap: int) -> None:
    """The best ``limit`` groups in the order of their best hit, each with its best
    ``group_size`` hits; an array joins every group it names; the search is asked
    again for more candidates while groups are short and more may exist."""
    from peregrine.vector.groups import GroupSpec, grouped
    from peregrine.vector.queries import ReadOptions

    ranked = sorted(rows, key=lambda r: -r[1])
    hits = [Hit(pid, score, {"g": g} if g is not None else {}) for pid, score, g in ranked]
    asked: list[int] = []

    def search(options: ReadOptions) -> list[Hit]:
        asked.append(options.limit)
        return hits[:options.limit]

    got = grouped(search, ReadOptions(), GroupSpec("g", group_size, limit), cap)
    seen = hits[:asked[-1]]
    groups: dict[Any, list[int]] = {}
    for hit in seen:
        values = hit.payload.get("g") if hit.payload else None
        for v in dict.fromkeys(values if isinstance(values, list) else [values]):
            if v is None or isinstance(v, bool):
                continue
            members = groups.setdefault(v, [])
            if len(members) < group_size:
                members.append(hit.id)
    want = list(groups.items())[:limit]
    assert [(g.id, [h.id for h in g.hits]) for g in got] == want
    full = len(want) == limit and all(len(m) == group_size for _, m in want)
    if not full and asked[-1] < min(cap, len(hits)):
        raise AssertionError(f"stopped at {asked[-1]} candidates with groups short")
