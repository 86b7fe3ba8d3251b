"""Decoding a large JSON body in slices, so that other requests run in between.

A JSON parser holds the GIL for the whole document: a 5 MB bulk upsert is about
25 ms of ``orjson.loads`` and, for vectors, as long again turning the nested lists
into arrays, and every search that arrives meanwhile waits for all of it. Such a
body is almost entirely one array (the points, or a batch's vectors), so this module
finds that array with a few vectorised numpy passes over the bytes, parses the rest
of the document with a placeholder in its place, and parses the array itself in
slices of a few tens of kilobytes, giving the GIL away between slices.

The result is the document ``orjson.loads`` would return (a protocol may convert
each slice, e.g. to a float32 matrix, through a :class:`SliceHook`). Anything this
scan does not fully understand (the array under a list, elements that are not all
objects or arrays, a syntax error anywhere) makes :func:`plan` or :func:`decode`
give up, and the caller parses the body whole, which also produces orjson's error
message for bad input.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson

# Slices parse in well under a millisecond each.
SLICE_BYTES = 64 << 10
# The array must be most of the body, or slicing it saves little.
_MIN_SHARE = 0.5
_MAX_PATH = 8
_SCAN_CHUNK = 64 << 10

_OPEN, _CLOSE, _QUOTE, _ESCAPE = 1, 2, 3, 4
_CLASS = np.zeros(256, dtype=np.uint8)
_CLASS[[ord("["), ord("{")]] = _OPEN
_CLASS[[ord("]"), ord("}")]] = _CLOSE
_CLASS[ord('"')] = _QUOTE
_CLASS[ord("\\")] = _ESCAPE
_WHITESPACE = b" \t\r\n"
_COMMA = ord(",")
# A string no client can send: the placeholder for the sliced array.
_PLACEHOLDER = "peregrine-slices-" + secrets.token_hex(16)


class SliceHook(Protocol):
    """How a protocol turns the slices of one array into the value it validates."""

    def convert(self, path: tuple[str, ...], items: list[Any]) -> Any:
        """One slice's elements, parsed (runs between GIL hand-offs)."""

    def join(self, path: tuple[str, ...], parts: list[Any]) -> Any:
        """The converted slices, in order, into the array's value."""


class ListSlices:
    """The default hook: the array as ``orjson.loads`` would return it."""

    def convert(self, path: tuple[str, ...], items: list[Any]) -> Any:
        return items

    def join(self, path: tuple[str, ...], parts: list[Any]) -> Any:
        out: list[Any] = []
        for part in parts:
            out.extend(part)
        return out


@dataclass(frozen=True)
class SlicePlan:
    """Where the big array is: its key path from the root object and the byte
    ranges of the slices of its elements."""

    path: tuple[str, ...]
    start: int  # offset of the array's "["
    end: int  # offset just past its "]"
    slices: tuple[tuple[int, int], ...]


def plan(body: bytes) -> SlicePlan | None:
    """The slicing plan for a JSON document, or None to parse it whole."""
    b = np.frombuffer(body, dtype=np.uint8)
    marks = _marks(b)
    kinds = _CLASS[b[marks]]
    quotes = marks[kinds == _QUOTE]
    escapes = marks[kinds == _ESCAPE]
    if len(escapes):
        quotes = _unescaped(quotes, escapes)
    if len(quotes) % 2:
        return None
    brackets = marks[(kinds == _OPEN) | (kinds == _CLOSE)]
    # A bracket after an odd number of quotes is inside a string.
    brackets = brackets[(np.searchsorted(quotes, brackets) & 1) == 0]
    if len(brackets) < 4:
        return None
    opens = _CLASS[b[brackets]] == _OPEN
    depth = np.cumsum(np.where(opens, 1, -1))
    if depth.min() < 0 or depth[-1] != 0:
        return None
    # Each bracket's nesting level (an opener's level is the depth it opens); within a
    # level, openers and their closers alternate in position order.
    level = np.where(opens, depth, depth + 1)
    order = np.argsort(level, kind="stable")
    first, second = order[0::2], order[1::2]
    if (not opens[first].all() or opens[second].any()
            or not np.array_equal(level[first], level[second])
            or not np.array_equal(b[brackets[first]] + 2, b[brackets[second]])):
        return None  # "[" + 2 == "]" and "{" + 2 == "}": every pair matches in kind
    open_at, close_at, open_level = brackets[first], brackets[second], level[first]
    spans = close_at - open_at
    arrays = np.flatnonzero(b[open_at] == ord("["))
    if not len(arrays):
        return None
    big = int(arrays[np.argmax(spans[arrays])])
    start, end, lvl = int(open_at[big]), int(close_at[big]) + 1, int(open_level[big])
    if end - start < _MIN_SHARE * len(body) or not 1 < lvl <= _MAX_PATH:
        return None
    path = _key_path(body, quotes, open_at, open_level, start, lvl)
    if path is None:
        return None
    # Its elements: the pairs one level down inside it, with only commas between.
    inner = np.flatnonzero((open_level == lvl + 1) & (open_at > start) & (open_at < end))
    if len(inner) < 2:
        return None
    elems_open = open_at[inner]
    order_in = np.argsort(elems_open)
    elems_open, elems_close = elems_open[order_in], close_at[inner][order_in]
    if not _only_commas(body, b, start, end, elems_open, elems_close):
        return None
    cuts = _cuts(elems_open, elems_close)
    return SlicePlan(path, start, end, cuts)


def decode(body: bytes, slicing: SlicePlan, hook: SliceHook,
           pause: Callable[[], None] = lambda: time.sleep(0)) -> Any:
    """The document, parsed slice by slice with ``pause()`` between slices.

    Raises ``orjson.JSONDecodeError`` or ``LookupError`` when the body is not what
    the plan assumed; the caller then parses it whole.
    """
    skeleton = orjson.loads(b"".join((body[:slicing.start],
                                      orjson.dumps(_PLACEHOLDER), body[slicing.end:])))
    parent = skeleton
    for key in slicing.path[:-1]:
        parent = parent[key]
    last = slicing.path[-1]
    if not isinstance(parent, dict) or parent.get(last) != _PLACEHOLDER:
        raise LookupError("a duplicate key hides the sliced array")
    parts: list[Any] = []
    for lo, hi in slicing.slices:
        pause()
        parts.append(hook.convert(slicing.path, orjson.loads(b"[" + body[lo:hi] + b"]")))
    pause()
    parent[last] = hook.join(slicing.path, parts)
    return skeleton


def _marks(b: np.ndarray) -> np.ndarray:
    """Offsets of every bracket, brace, quote and backslash.

    ``b | 32`` folds "[" onto "{", "]" onto "}" and "\\" onto "|", so two range
    compares find them all (with "|" and 0x02, dropped by classification). The body
    is scanned in cache-sized chunks through reused buffers: fresh megabyte arrays
    would cost more in page faults than the compares themselves.
    """
    folded = np.empty(_SCAN_CHUNK, dtype=np.uint8)
    low = np.empty(_SCAN_CHUNK, dtype=bool)
    high = np.empty(_SCAN_CHUNK, dtype=bool)
    found: list[np.ndarray] = []
    for at in range(0, len(b), _SCAN_CHUNK):
        part = b[at:at + _SCAN_CHUNK]
        n = len(part)
        f, lo, hi = folded[:n], low[:n], high[:n]
        np.bitwise_or(part, 32, out=f)
        np.greater_equal(f, ord("{"), out=lo)
        np.less_equal(f, ord("}"), out=hi)
        np.logical_and(lo, hi, out=lo)
        np.equal(f, ord('"'), out=hi)
        np.logical_or(lo, hi, out=lo)
        hits = np.flatnonzero(lo)
        if len(hits):
            found.append(hits + at)
    marks = np.concatenate(found) if found else np.empty(0, dtype=np.intp)
    structural: np.ndarray = marks[_CLASS[b[marks]] != 0]
    return structural


def _unescaped(quotes: np.ndarray, escapes: np.ndarray) -> np.ndarray:
    """The quotes that delimit strings: those not after an odd run of backslashes.
    Only the backslashes' offsets are scanned, not the body."""
    if not len(quotes):
        return quotes
    # Runs of consecutive backslashes: each backslash's 1-based place in its run.
    breaks = np.ones(len(escapes), dtype=bool)
    breaks[1:] = escapes[1:] != escapes[:-1] + 1
    run_start = np.maximum.accumulate(np.where(breaks, np.arange(len(escapes)), 0))
    place = np.arange(len(escapes)) - run_start + 1
    at = np.searchsorted(escapes, quotes - 1)
    at_ok = np.minimum(at, len(escapes) - 1)
    after_escape = (at < len(escapes)) & (escapes[at_ok] == quotes - 1)
    odd = after_escape & ((place[at_ok] & 1) == 1)
    delimiters: np.ndarray = quotes[~odd]
    return delimiters


def _key_path(body: bytes, quotes: np.ndarray, open_at: np.ndarray, open_level: np.ndarray,
              start: int, lvl: int) -> tuple[str, ...] | None:
    """Keys from the root object down to the array at ``start``; None unless every
    enclosing container is an object."""
    keys: list[str] = []
    child = start
    for up in range(lvl - 1, 0, -1):
        candidates = open_at[(open_level == up) & (open_at < child)]
        parent = int(candidates.max())
        if body[parent] != ord("{"):
            return None
        # The key is the last string before the child, closed by the quote before ":".
        q = int(np.searchsorted(quotes, child)) - 1
        if q < 1 or q % 2 == 0 or quotes[q] < parent:
            return None
        colon = body[quotes[q] + 1:child].strip(_WHITESPACE)
        if colon != b":":
            return None
        key = orjson.loads(body[int(quotes[q - 1]):int(quotes[q]) + 1])
        if not isinstance(key, str):
            return None
        keys.append(key)
        child = parent
    return tuple(reversed(keys))


def _only_commas(body: bytes, b: np.ndarray, start: int, end: int, elems_open: np.ndarray,
                 elems_close: np.ndarray) -> bool:
    """Whether the array holds nothing but these elements, separated by commas."""
    if body[start + 1:int(elems_open[0])].strip(_WHITESPACE):
        return False
    if body[int(elems_close[-1]) + 1:end - 1].strip(_WHITESPACE):
        return False
    gap_lo, gap_hi = elems_close[:-1] + 1, elems_open[1:]
    tight = (gap_hi - gap_lo == 1)
    if not (b[gap_lo[tight]] == _COMMA).all():
        return False
    return all(body[int(lo):int(hi)].strip(_WHITESPACE) == b","
               for lo, hi in zip(gap_lo[~tight], gap_hi[~tight], strict=True))


def _cuts(elems_open: np.ndarray, elems_close: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Whole elements grouped into ranges of about SLICE_BYTES."""
    n = len(elems_open)
    total = int(elems_close[-1]) - int(elems_open[0])
    count = max(1, min(n, total // SLICE_BYTES))
    bounds = np.searchsorted(elems_open, elems_open[0] + np.arange(1, count) * (total / count))
    edges = [0, *sorted(set(int(x) for x in bounds if 0 < x < n)), n]
    return tuple((int(elems_open[lo]), int(elems_close[hi - 1]) + 1)
                 for lo, hi in itertools.pairwise(edges))
