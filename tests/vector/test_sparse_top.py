"""Sparse top-k and document frequencies against a plain-Python oracle.

The compiled pass (``sparse_kernel``) sums rows by blocks and keeps the best
through a heap, so the cases that matter are many ties at the cut, rows past
the segment's published count, filters, negative weights, k beside the number
of rows hit, lists split between the sorted part and the unsorted tail, and
rows spread over several blocks."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peregrine.vector.segment import sparse_kernel
from peregrine.vector.segment.side import SparseSide
from peregrine.vector.types import SparseVector

VALUES = st.sampled_from([0.5, 1.0, 1.0, 2.0, -1.0])  # few distinct values: ties
WEIGHTS = st.sampled_from([0.25, 1.0, 3.0, -2.0])


def _oracle(entries: list[tuple[int, int, float]], weights: dict[int, float], n: int,
            allowed: np.ndarray | None) -> dict[int, float]:
    """Row -> sum of weight x value over entries (row, index, value) that count."""
    sums: dict[int, float] = {}
    for row, dim, val in entries:
        if dim in weights and row < n and (allowed is None or allowed[row]):
            sums[row] = sums.get(row, 0.0) + val * weights[dim]
    return sums


def _check(scores: np.ndarray, rows: np.ndarray, sums: dict[int, float], k: int) -> None:
    expect = sorted(((-np.float32(s), r) for r, s in sums.items()))[:k]
    got_rows = rows[0].tolist()
    assert len(got_rows) == len(set(got_rows)) == len(expect)
    np.testing.assert_allclose(scores[0], [-s for s, _ in expect], rtol=1e-6)
    for r, s in zip(got_rows, scores[0].tolist(), strict=True):
        assert np.isclose(s, sums[r], rtol=1e-6)  # each row carries its own score
    # Best first; a tie ranks the lower row first.
    pairs = list(zip((-scores[0]).tolist(), got_rows, strict=True))
    assert pairs == sorted(pairs)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_side_top_and_doc_freq_match_oracle(data: st.DataObject) -> None:
    n_rows = data.draw(st.integers(1, 60))
    dims = st.sets(st.integers(0, 7), max_size=5)
    points = [sorted(data.draw(dims)) for _ in range(n_rows)]
    entries = [(row, d, data.draw(VALUES)) for row, ds in enumerate(points) for d in ds]
    side = SparseSide()
    sorted_up_to = data.draw(st.integers(0, n_rows))  # rows after it stay in the tail

    def add(lo: int, hi: int) -> None:
        vecs = []
        for row in range(lo, hi):
            mine = [(d, v) for r, d, v in entries if r == row]
            vecs.append(SparseVector(np.array([d for d, _ in mine], np.uint32),
                                     np.array([v for _, v in mine], np.float32)))
        side.add(vecs, lo)

    add(0, sorted_up_to)
    side.resort()
    add(sorted_up_to, n_rows)
    query = np.array(sorted(data.draw(st.sets(st.integers(0, 9), min_size=1, max_size=5))),
                     np.uint32)
    weights = np.array([data.draw(WEIGHTS) for _ in query])
    k = data.draw(st.integers(1, 25))
    allowed = None
    if data.draw(st.booleans()):
        allowed = np.array([data.draw(st.booleans()) for _ in range(n_rows)], np.bool_)
    n = data.draw(st.integers(0, n_rows))  # rows at or past n are not published yet
    lists = side.postings(query)
    scores, rows = SparseSide.top(lists, weights, k, allowed, n)
    _check(scores, rows, _oracle(entries, dict(zip(query.tolist(), weights.tolist(),
                                                   strict=True)), n, allowed), k)
    df = SparseSide.doc_freq(lists, query.size, allowed, n)
    for q, d in enumerate(query.tolist()):
        assert df[q] == sum(1 for r, dd, _ in entries
                            if dd == d and r < n and (allowed is None or allowed[r]))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_kernel_spans_blocks(data: st.DataObject) -> None:
    """Rows far apart: several blocks, empty blocks skipped, and the cut at ``n``
    inside a block."""
    span = 4 * sparse_kernel.BLOCK + 7
    n_lists = data.draw(st.integers(1, 5))
    row_sets = [sorted(data.draw(st.sets(st.integers(0, span - 1), max_size=40)))
                for _ in range(n_lists)]
    vals = [[data.draw(VALUES) for _ in rs] for rs in row_sets]
    weights = np.array([data.draw(WEIGHTS) for _ in range(n_lists)])
    rows0 = np.array([r for rs in row_sets for r in rs], np.int64)
    vals0 = np.array([v for vs in vals for v in vs], np.float32)
    sizes = np.array([len(rs) for rs in row_sets], np.int64)
    hi = np.cumsum(sizes)
    lo = hi - sizes
    k = data.draw(st.integers(1, 30))
    n = data.draw(st.integers(0, span))
    allowed = None
    if data.draw(st.booleans()):
        allowed = np.random.default_rng(data.draw(st.integers(0, 99))).random(span) < 0.5
    scores, rows = sparse_kernel.top_k(
        lo, hi, np.zeros(n_lists, np.uint8), weights, rows0, vals0, rows0[:0], vals0[:0], n,
        np.zeros(1, np.bool_) if allowed is None else allowed, allowed is not None, k)
    entries = [(r, q, v) for q in range(n_lists)
               for r, v in zip(row_sets[q], vals[q], strict=True)]
    sums = _oracle(entries, dict(enumerate(weights.tolist())), n, allowed)
    _check(scores[None, :], rows[None, :], sums, k)


def test_readers_never_mix_generations_of_the_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    """Readers that skip the writer's lock (as ``SideStore`` readers do once the
    rows they need are counted) while rows arrive and the lists are re-sorted:
    every answer is exact for the rows published when it was asked. The compiled
    loops index unchecked, so a mix of two sorts could read out of bounds."""
    from peregrine.vector.segment import side as side_module

    monkeypatch.setattr(side_module, "_MIN_TAIL", 16)  # re-sort often
    side = SparseSide()
    query = np.array([0, 5, 6], np.uint32)
    weights = np.array([1.0, 2.0, 0.5])

    def point(r: int) -> SparseVector:
        dims = np.array(sorted({r % 5, r % 7 + 5}), np.uint32)
        return SparseVector(dims, np.full(dims.size, 1.0 + r % 3, np.float32))

    def expect(n: int, k: int) -> list[tuple[float, int]]:
        r = np.arange(n)
        v = 1.0 + r % 3
        s = (r % 5 == 0) * v + (r % 7 == 0) * v * 2 + (r % 7 == 1) * v * 0.5
        hit = (r % 5 == 0) | (r % 7 <= 1)
        return sorted(zip((-s[hit]).tolist(), r[hit].tolist(), strict=True))[:k]

    published = [0]
    done = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for first in range(0, 6000, 37):
                side.add([point(r) for r in range(first, first + 37)], first)
                side.resort()
                published[0] = first + 37  # counted last, as SideStore.catch_up does
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    checks = 0
    while not done.is_set() or checks < 5:
        n = published[0]
        scores, rows = SparseSide.top(side.postings(query), weights, 15, None, n)
        got = list(zip((-scores[0].astype(np.float64)).tolist(), rows[0].tolist(),
                       strict=True))
        assert got == expect(n, 15), n
        checks += 1
    writer.join()
    assert not errors
    assert checks > 5


def test_huge_k_and_ties_below_float32_precision() -> None:
    """k far past the rows hit allocates nothing that large; sums that differ
    only below float32's precision tie as the float32 scores returned do, so
    the lower row comes first."""
    side = SparseSide()
    side.add([SparseVector(np.array([1, 2], np.uint32), np.array([1.0, 1e-9], np.float32)),
              SparseVector(np.array([1, 2], np.uint32), np.array([1.0, 2e-9], np.float32)),
              SparseVector(np.array([1], np.uint32), np.array([0.5], np.float32))], 0)
    side.resort(force=True)
    scores, rows = SparseSide.top(side.postings(np.array([1, 2], np.uint32)), np.ones(2),
                                  10**12, None, 3)
    assert rows[0].tolist() == [0, 1, 2]
    assert scores[0].tolist() == [1.0, 1.0, 0.5]
