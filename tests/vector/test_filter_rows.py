"""Selective match filters go from the index postings straight to scoring:
the same hits as the mask path, with tombstones, arrays and both segment kinds."""

from __future__ import annotations

import numpy as np

import peregrine
from peregrine.vector.segment.filters import RowsFilter, compile_filter, filter_rows


def test_match_filters_name_their_rows() -> None:
    assert isinstance(compile_filter({"must": [{"key": "g", "match": {"value": 3}}]}), RowsFilter)
    assert isinstance(compile_filter({"must": {"key": "g", "match": {"any": [1, 2]}}}),
                      RowsFilter)
    both = compile_filter({"must": [{"key": "g", "match": {"value": 3}},
                                    {"key": "h", "match": {"value": 1}}]})
    assert not isinstance(both, RowsFilter)


def test_rows_path_matches_the_mask_path(db: peregrine.Database) -> None:
    rng = np.random.default_rng(0)
    c = db.create_collection("c", 8, "dot", index={"segment_rows": 300})
    c.create_payload_index("g", "integer")
    vecs = rng.standard_normal((500, 8)).astype(np.float32)
    payloads = [{"g": [i % 7, (i + 1) % 7] if i % 5 == 0 else i % 7} for i in range(500)]
    c.upsert(list(range(300)), vecs[:300], payloads[:300])
    c.optimize()  # 300 sealed rows
    c.upsert(list(range(300, 500)), vecs[300:], payloads[300:])  # 200 mutable rows
    c.delete(ids=[7, 14, 307])
    c.upsert([21], vecs[21] * 2, [{"g": 0}])  # overwritten: old row tombstoned
    for values in ([0], [0, 1], [6]):
        flt = {"must": [{"key": "g", "match": {"any": values}}]}
        compiled = compile_filter(flt)
        for seg in c.segments:
            rows = filter_rows(compiled, seg)
            assert rows is not None
            assert sorted(rows.tolist()) == np.flatnonzero(compiled(seg)).tolist()
        for q in vecs[:20]:
            got = [(h.id, round(h.score, 4)) for h in c.search(q, 10, filter=flt)]
            # The same filter as a should-clause goes through masks.
            masked = {"should": [{"key": "g", "match": {"any": values}}],
                      "must_not": [{"has_id": [10**9]}]}
            want = [(h.id, round(h.score, 4)) for h in c.search(q, 10, filter=masked)]
            assert got == want
            assert not {7, 14, 307} & {h for h, _ in got}
