"""``SparseSide.top`` against a plain-Python oracle.

The top k is picked among the lists' entries after one bincount (a row's sum
sits on each of its entries), so the cases that matter are many ties at the
cut, rows past the segment's published count, filters, negative weights, and
k beside the number of entries."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peregrine.vector.segment import side
from peregrine.vector.segment.side import SparseSide


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, int,
                                    np.ndarray | None, int]:
    n_rows = draw(st.integers(1, 60))
    n_lists = draw(st.integers(1, 6))
    values = st.sampled_from([0.5, 1.0, 1.0, 2.0, -1.0])  # few distinct values: ties
    postings = []
    for _ in range(n_lists):
        rows = sorted(draw(st.sets(st.integers(0, n_rows - 1), max_size=n_rows)))
        vals = [draw(values) for _ in rows]
        postings.append((np.array(rows, np.int64), np.array(vals, np.float32)))
    weights = np.array([draw(st.sampled_from([0.25, 1.0, 3.0, -2.0]))
                        for _ in range(n_lists)])
    k = draw(st.integers(1, 25))
    allowed = None
    if draw(st.booleans()):
        allowed = np.array([draw(st.booleans()) for _ in range(n_rows)], np.bool_)
    n = draw(st.integers(0, n_rows))  # rows at or past n are not published yet
    return postings, weights, k, allowed, n


@pytest.mark.parametrize("sums", ["by row", "by touched row"])
@settings(max_examples=300, deadline=None)
@given(case=cases())
def test_top_matches_oracle(case: tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, int,
                                        np.ndarray | None, int], sums: str) -> None:
    """Both ways of summing: an array indexed by row, and (as for short lists in
    a huge segment) by the rows the lists touch."""
    postings, weights, k, allowed, n = case
    dense_min = side._DENSE_MIN if sums == "by row" else 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(side, "_DENSE_MIN", dense_min)
        patch.setattr(side, "_DENSE_SUMS", side._DENSE_SUMS if sums == "by row" else 0)
        _check_top(postings, weights, k, allowed, n)


def _check_top(postings: list[tuple[np.ndarray, np.ndarray]], weights: np.ndarray, k: int,
               allowed: np.ndarray | None, n: int) -> None:
    sums: dict[int, float] = {}
    for (rows, vals), w in zip(postings, weights, strict=True):
        for r, v in zip(rows.tolist(), vals.tolist(), strict=True):
            if r < n and (allowed is None or allowed[r]):
                sums[r] = sums.get(r, 0.0) + v * w
    expect = sorted((np.float32(s) for s in sums.values()), reverse=True)[:k]
    scores, rows = SparseSide.top(postings, weights, k, allowed, n)
    got_rows = rows[0].tolist()
    assert len(got_rows) == len(set(got_rows)) == len(expect)
    np.testing.assert_allclose(scores[0], expect, rtol=1e-6)
    for r, s in zip(got_rows, scores[0].tolist(), strict=True):
        assert np.isclose(s, sums[r], rtol=1e-6)  # each row carries its own score
