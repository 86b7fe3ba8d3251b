"""Compiled loops of sparse search: the sums of a query's inverted lists and
their top k, in one pass (numba, compiled on first use and cached on disk).

Why compiled: a query's lists hold thousands to hundreds of thousands of
entries, each adding to the sum of a row. In numpy that is several passes over
the entries (concatenate, weight, ``bincount`` into an array as long as the
segment, gather, partition, ``unique``), and the segment-long array is
allocated, zeroed and scattered into at random on every query; the passes and
cache misses, not the arithmetic, set the cost.

Here the rows are walked in blocks of ``BLOCK`` rows. Every list ascends by
row, so each list's entries inside a block are one run after a cursor, and
the block's sums fit in a small array that stays in cache. Three tight passes
over those runs beat one pass with bookkeeping: add to the sums; offer each
row's sum once to a k-sized heap (marking it taken); clear the sums for the
next block. Blocks holding no entry are skipped, so a rare-term query in a
huge segment costs what its entries cost.

A list is a run ``[lo, hi)`` of one of two entry arrays (``src`` 0: the sorted
lists, 1: the entries of rows added since they were sorted), so the caller
never copies lists to hand them over. Ties in score rank the lower row first.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

BLOCK = 16_384  # rows summed per block: 128 KiB of float64 sums, cache-resident

I64 = npt.NDArray[np.int64]


@njit(cache=True, nogil=True)
def _worse(s1: float, r1: int, s2: float, r2: int) -> bool:  # pragma: no cover - compiled
    """Whether hit (s1, r1) ranks below (s2, r2): lower score, or the higher row on a tie."""
    return s1 < s2 or (s1 == s2 and r1 > r2)


@njit(cache=True, nogil=True)
def _offer(hs: np.ndarray, hr: np.ndarray, m: int, k: int, s: float,
           r: int) -> int:  # pragma: no cover - compiled
    """Offer hit (s, r) to the min-heap of the k best (``m`` held); returns the new ``m``."""
    if m < k:
        j = m
        while j > 0:
            p = (j - 1) >> 1
            if not _worse(s, r, hs[p], hr[p]):
                break
            hs[j] = hs[p]
            hr[j] = hr[p]
            j = p
        hs[j] = s
        hr[j] = r
        return m + 1
    if _worse(hs[0], hr[0], s, r):
        _sift_down(hs, hr, m, s, r)
    return m


@njit(cache=True, nogil=True)
def _sift_down(hs: np.ndarray, hr: np.ndarray, size: int, s: float,
               r: int) -> None:  # pragma: no cover - compiled
    """Put hit (s, r) at the root of the min-heap's first ``size`` slots and
    sink it to its place."""
    j = 0
    while True:
        c = 2 * j + 1
        if c >= size:
            break
        if c + 1 < size and _worse(hs[c + 1], hr[c + 1], hs[c], hr[c]):
            c += 1
        if not _worse(hs[c], hr[c], s, r):
            break
        hs[j] = hs[c]
        hr[j] = hr[c]
        j = c
    hs[j] = s
    hr[j] = r


@njit(cache=True, nogil=True)
def top_k(lo: np.ndarray, hi: np.ndarray, src: np.ndarray, weights: np.ndarray,
          rows0: np.ndarray, vals0: np.ndarray, rows1: np.ndarray, vals1: np.ndarray,
          n: int, allowed: np.ndarray, filtered: bool, k: int
          ) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """The k rows below ``n`` (and ``allowed``, when ``filtered``) with the best
    sums of ``weights[l] * value`` over the lists' entries, best first."""
    n_lists = lo.size
    if k <= 0:
        return np.empty(0, np.float32), np.empty(0, np.int64)
    cur = lo.copy()
    end = hi.copy()
    for q in range(n_lists):  # cut each list at the published rows
        rows = rows0 if src[q] == 0 else rows1
        a, b = cur[q], end[q]
        while a < b:  # first entry with row >= n
            mid = (a + b) >> 1
            if rows[mid] < n:
                a = mid + 1
            else:
                b = mid
        end[q] = a
    sums = np.zeros(BLOCK, np.float64)
    run_end = np.empty(n_lists, np.int64)
    hs = np.empty(k, np.float64)
    hr = np.empty(k, np.int64)
    m = 0
    while True:
        first = -1  # the lowest row still ahead in any list
        for q in range(n_lists):
            if cur[q] < end[q]:
                r = rows0[cur[q]] if src[q] == 0 else rows1[cur[q]]
                if first < 0 or r < first:
                    first = r
        if first < 0:
            break
        start = first - first % BLOCK
        stop = start + BLOCK
        # Pass 1: each list's run inside the block adds to its rows' sums (a NaN
        # is a sum taken in an earlier block: zero).
        for q in range(n_lists):
            rows = rows0 if src[q] == 0 else rows1
            vals = vals0 if src[q] == 0 else vals1
            w = weights[q]
            c, e = cur[q], end[q]
            while c < e and rows[c] < stop:
                r = rows[c]
                if not filtered or allowed[r]:
                    j = r - start
                    x = sums[j]
                    sums[j] = (0.0 if x != x else x) + vals[c] * w
                c += 1
            run_end[q] = c
        # Pass 2: each row hit offers its sum once, and marks it taken (NaN).
        for q in range(n_lists):
            rows = rows0 if src[q] == 0 else rows1
            for c in range(cur[q], run_end[q]):
                r = rows[c]
                if filtered and not allowed[r]:
                    continue
                s = sums[r - start]
                if s != s:
                    continue
                sums[r - start] = np.nan
                s = np.float64(np.float32(s))  # ranked as returned: float32 ties tie
                if m < k or s > hs[0] or (s == hs[0] and r < hr[0]):
                    m = _offer(hs, hr, m, k, s, r)
            cur[q] = run_end[q]
    # Pop the heap from the worst: filled from the back, best first.
    out_s = np.empty(m, np.float32)
    out_r = np.empty(m, np.int64)
    size = m
    while size > 0:
        out_s[size - 1] = hs[0]
        out_r[size - 1] = hr[0]
        size -= 1
        if size > 0:
            _sift_down(hs, hr, size, hs[size], hr[size])
    return out_s, out_r


@njit(cache=True, nogil=True)
def lookup(keys: np.ndarray, starts: np.ndarray,
           dims: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover
    """The sorted lists of the query's indices ``dims`` (ascending): for each one
    present in ``keys``, its run ``[lo, hi)`` and its position in ``dims``."""
    lo = np.empty(dims.size, np.int64)
    hi = np.empty(dims.size, np.int64)
    query = np.empty(dims.size, np.int64)
    m = 0
    for q in range(dims.size):
        p = np.searchsorted(keys, dims[q])
        if p < keys.size and keys[p] == dims[q]:
            lo[m] = starts[p]
            hi[m] = starts[p + 1]
            query[m] = q
            m += 1
    return lo[:m], hi[:m], query[:m]


@njit(cache=True, nogil=True)
def doc_freq(lo: np.ndarray, hi: np.ndarray, src: np.ndarray, query: np.ndarray,
             size: int, rows0: np.ndarray, rows1: np.ndarray, n: int, live: np.ndarray,
             filtered: bool) -> np.ndarray:  # pragma: no cover - compiled
    """Per query index (``size`` of them): the entries of its lists with a row
    below ``n`` (and ``live``, when ``filtered``)."""
    out = np.zeros(size, np.int64)
    for q in range(lo.size):
        rows = rows0 if src[q] == 0 else rows1
        if not filtered and (hi[q] == lo[q] or rows[hi[q] - 1] < n):
            out[query[q]] += hi[q] - lo[q]  # the whole list counts
            continue
        count = 0
        for c in range(lo[q], hi[q]):
            r = rows[c]
            if r >= n:
                break
            if not filtered or live[r]:
                count += 1
        out[query[q]] += count
    return out


def warm() -> None:
    """Compile every loop for the argument types sparse search passes (or load
    them from numba's cache): ``scripts/setup.sh`` runs it once, so that no
    server's first sparse query waits seconds for the compiler."""
    lo, hi = np.zeros(1, np.int64), np.ones(1, np.int64)
    src, query = np.zeros(1, np.uint8), np.zeros(1, np.int64)
    rows, vals = np.zeros(1, np.int32), np.ones(1, np.float32)
    keys, starts = np.zeros(1, np.uint32), np.array([0, 1], np.int64)
    mask = np.ones(1, np.bool_)
    lookup(keys, starts, np.zeros(1, np.uint32))
    doc_freq(lo, hi, src, query, 1, rows, rows[:0], 1, mask, False)
    top_k(lo, hi, src, np.ones(1), rows, vals, rows[:0], vals[:0], 1, mask, False, 1)
