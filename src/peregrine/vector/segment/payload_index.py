"""Per-segment payload field indexes.

A ``FieldIndex`` maps the values found at one payload path to the segment rows
holding them: equality lookups (keywords, integers, booleans), ranges over
numbers, and presence/null sets for ``is_empty``/``is_null``. Every filter
condition resolves to a boolean row mask with numpy operations, so filtered
search never calls Python per candidate.

Storage is a few flat numpy arrays per field, so an indexed small payload
costs bytes per point, not a Python object or two (hundreds of bytes):

* integers: CSR postings, i.e. sorted unique int64 keys, ``indptr`` and the
  rows of each key in key order. Equality is a binary search; a range over
  integers is one contiguous slice of the rows.
* strings, booleans, integers beyond int64: a dict from key to a dense code
  (the only per-key Python objects) and CSR postings over the codes.
* other numbers (floats): values sorted with their rows, for ranges.
* presence, null, "holds null", "holds a value that is not a keyword or
  integer" and "holds a keyword or integer": one bool per row each,
  allocated the first time a row needs it.

The index is append-only, like the segments it belongs to (an overwrite is a
new row plus a tombstone), which is what lets the mutable segment keep one
incrementally: ``catch_up`` indexes only rows added since the last call and
merges them into the postings. Writers hold the index's lock; readers take
the published ``_Snapshot`` without it. A snapshot never changes once
published: the postings are new arrays on every merge, and the row flags are
append-only buffers that a snapshot only reads below its own row count.

Sealed segments persist indexes of declared fields and build the others on
first use.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from peregrine.vector.paths import nodes_at, parse_path
from peregrine.vector.segment.text import TokenIndex
from peregrine.vector.types import TextIndexParams

Mask = npt.NDArray[np.bool_]
Rows = npt.NDArray[np.signedinteger[Any]]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
EqKey = str | int | tuple[str, bool]

PAYLOAD_INDEX_TYPES = ("keyword", "integer", "float", "bool", "datetime", "geo", "uuid")
# Saved indexes of another version are rebuilt from the payloads (version 1
# read array elements through key steps, which Qdrant's paths do not;
# version 2 stored a list of rows per key; version 3 had no geo points).
FORMAT_VERSION = 4

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_I32_MAX = 2**31 - 1
_CHUNK_ROWS = 65_536  # rows gathered in Python lists before they are merged
_FLOAT_EXACT = 2**53  # integers below this in magnitude convert to float exactly
_FLAGS = ("present", "null", "has_null", "other", "eq_any")


def eq_key(value: Any) -> EqKey | None:
    """Hash key for equality: keeps True apart from 1, as JSON does."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, str)):
        return value
    return None


def _is_i64(key: EqKey) -> bool:
    return type(key) is int and _I64_MIN <= key <= _I64_MAX


def _small_dtype(largest: int) -> type[np.signedinteger[Any]]:
    """int32 while it holds ``largest``: rows and offsets cost half as much."""
    return np.int32 if largest <= _I32_MAX else np.int64


class _Postings:
    """Immutable CSR map: sorted unique int64 keys -> rows (ascending per key)."""

    __slots__ = ("indptr", "keys", "rows")

    def __init__(self, keys: I64, indptr: Rows, rows: Rows) -> None:
        self.keys = keys
        self.indptr = indptr
        self.rows = rows

    @classmethod
    def empty(cls) -> _Postings:
        return cls(np.empty(0, np.int64), np.zeros(1, np.int32), np.empty(0, np.int32))

    def merged(self, keys: I64, rows: Rows) -> _Postings:
        """These postings plus entries (``keys[i]`` at ``rows[i]``) whose rows
        all come after every row here, given in ascending row order."""
        if keys.size == 0:
            return self
        order = np.argsort(keys, kind="stable")  # stable: rows stay ascending per key
        keys, rows = keys[order], rows[order]
        fresh, counts = np.unique(keys, return_counts=True)
        total = self.rows.size + rows.size
        row_dtype = np.result_type(self.rows.dtype, rows.dtype)
        if self.keys.size == 0:
            new_keys, new_rows, new_counts = fresh, rows.astype(row_dtype), counts
        else:
            # Each new entry goes after the existing entries of keys <= its own.
            at = self.indptr[np.searchsorted(self.keys, keys, side="right")]
            new_rows = np.insert(self.rows.astype(row_dtype, copy=False), at,
                                 rows.astype(row_dtype, copy=False))
            new_keys = np.union1d(self.keys, fresh)
            new_counts = np.zeros(new_keys.size, np.int64)
            new_counts[np.searchsorted(new_keys, self.keys)] = np.diff(self.indptr)
            new_counts[np.searchsorted(new_keys, fresh)] += counts
        indptr = np.zeros(new_keys.size + 1, _small_dtype(total))
        np.cumsum(new_counts, out=indptr[1:])
        return _Postings(new_keys, indptr, new_rows)

    def rows_of(self, key: int) -> Rows:
        i = int(self.keys.searchsorted(key))
        if i < self.keys.size and int(self.keys[i]) == key:
            return self.rows[int(self.indptr[i]) : int(self.indptr[i + 1])]
        return self.rows[:0]

    def slice_rows(self, lo: int, hi: int) -> Rows:
        """Rows of the keys at positions [lo, hi)."""
        return self.rows[int(self.indptr[lo]) : int(self.indptr[hi])]


class _Sorted:
    """Immutable numbers sorted ascending, with the row of each."""

    __slots__ = ("rows", "values")

    def __init__(self, values: F64, rows: Rows) -> None:
        self.values = values
        self.rows = rows

    @classmethod
    def empty(cls) -> _Sorted:
        return cls(np.empty(0, np.float64), np.empty(0, np.int32))

    def merged(self, values: F64, rows: Rows) -> _Sorted:
        if values.size == 0:
            return self
        order = np.argsort(values, kind="stable")
        values, rows = values[order], rows[order]
        row_dtype = np.result_type(self.rows.dtype, rows.dtype)
        if self.values.size == 0:
            return _Sorted(values, rows.astype(row_dtype))
        at = np.searchsorted(self.values, values, side="right")
        return _Sorted(np.insert(self.values, at, values),
                       np.insert(self.rows.astype(row_dtype, copy=False), at,
                                 rows.astype(row_dtype, copy=False)))


class _Snapshot:
    """What queries read: immutable once published."""

    __slots__ = ("codes", "flags", "floats", "geo", "ints", "multi", "rows")

    def __init__(self, rows: int, ints: _Postings, codes: _Postings, floats: _Sorted,
                 flags: dict[str, Mask | None], multi: bool, geo: F64 | None = None) -> None:
        self.rows = rows  # rows indexed: flags are only read below this
        self.ints = ints
        self.codes = codes
        self.floats = floats
        self.flags = flags
        self.multi = multi  # some row holds more than one equality key
        # Geo points ({"lon", "lat"} objects) as rows of (row, lon, lat), rows ascending.
        self.geo = geo if geo is not None else np.empty((0, 3))


class _Batch:
    """Entries of one ``catch_up`` call, gathered in plain lists, then merged."""

    __slots__ = (
        "code_keys",
        "code_rows",
        "flags",
        "geo",
        "int_keys",
        "int_rows",
        "multi",
        "num_rows",
        "num_values",
    )

    def __init__(self) -> None:
        self.geo: list[tuple[int, float, float]] = []  # (row, lon, lat)
        self.int_keys: list[int] = []
        self.int_rows: list[int] = []
        self.code_keys: list[int] = []
        self.code_rows: list[int] = []
        self.num_values: list[float] = []
        self.num_rows: list[int] = []
        self.flags: dict[str, list[int]] = {name: [] for name in _FLAGS}
        self.multi = False


class FieldIndex:
    """Index of one payload path over rows [0, rows_indexed) of a segment."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._steps = parse_path(path)
        self.rows_indexed = 0
        self._lock = threading.Lock()
        # Keys that are not int64 integers (strings, booleans, huge integers)
        # by dense code, and back; append-only, written under the lock.
        self._code_of: dict[EqKey, int] = {}
        self._code_keys: list[EqKey] = []
        self._epochs: F64 = np.empty(0)  # by code: see _code_epochs
        # Row flags: append-only buffers grown by doubling, None until needed.
        self._flags: dict[str, Mask | None] = dict.fromkeys(_FLAGS)
        self._snap = _Snapshot(0, _Postings.empty(), _Postings.empty(), _Sorted.empty(),
                               dict(self._flags), False)
        self._texts: dict[TextIndexParams, TokenIndex] = {}  # full-text, by tokenizer

    # -- indexing -------------------------------------------------------------
    def catch_up(self, payload_of: Callable[[int], dict[str, Any] | None], n_rows: int) -> None:
        if n_rows <= self.rows_indexed:
            return
        with self._lock:
            start = self.rows_indexed
            if n_rows <= start:
                return
            # In chunks, so the plain lists a chunk gathers stay small.
            for first in range(start, n_rows, _CHUNK_ROWS):
                stop = min(n_rows, first + _CHUNK_ROWS)
                batch = _Batch()
                for row in range(first, stop):
                    self._add(batch, row, payload_of(row))
                self._publish(batch, stop, n_rows)

    def _add(self, batch: _Batch, row: int, payload: dict[str, Any] | None) -> None:
        nodes = nodes_at(payload, self._steps) if payload else []
        if not nodes:
            return
        flags = batch.flags
        # Qdrant: empty = missing, null or []; a non-empty array (even [null]) is not.
        if any(node is not None and node != [] for node in nodes):
            flags["present"].append(row)
        if any(node is None for node in nodes):
            flags["null"].append(row)
        if any(node is None or (isinstance(node, list) and None in node) for node in nodes):
            flags["has_null"].append(row)
        other = False
        eq_count = 0
        for node in nodes:
            for value in node if isinstance(node, list) else (node,):
                if value is None:
                    continue
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    if type(value) is int and _I64_MIN <= value <= _I64_MAX:
                        batch.int_keys.append(value)  # ranges read the integer postings
                        batch.int_rows.append(row)
                        eq_count += 1
                        continue
                    batch.num_values.append(float(value))
                    batch.num_rows.append(row)
                key = eq_key(value)
                if key is None:
                    other = True  # floats, objects: never equal to a keyword/integer
                    if isinstance(value, dict) and _is_geo(value):
                        batch.geo.append((row, float(value["lon"]), float(value["lat"])))
                    continue
                code = self._code_of.get(key)
                if code is None:
                    code = self._code_of[key] = len(self._code_keys)
                    self._code_keys.append(key)
                batch.code_keys.append(code)
                batch.code_rows.append(row)
                eq_count += 1
        if other:
            flags["other"].append(row)
        if eq_count:
            flags["eq_any"].append(row)
            if eq_count > 1:
                batch.multi = True

    def _publish(self, batch: _Batch, n_rows: int, expected: int) -> None:
        """Merge a batch of rows up to ``n_rows`` into new postings and publish
        them (lock held); ``expected`` rows are coming in all."""
        snap = self._snap
        row_dtype = _small_dtype(n_rows)
        ints = snap.ints.merged(np.asarray(batch.int_keys, np.int64),
                               np.asarray(batch.int_rows, row_dtype))
        codes = snap.codes.merged(np.asarray(batch.code_keys, np.int64),
                                  np.asarray(batch.code_rows, row_dtype))
        floats = snap.floats.merged(np.asarray(batch.num_values, np.float64),
                                    np.asarray(batch.num_rows, row_dtype))
        for name, rows in batch.flags.items():
            if rows:
                self._set_flags(name, rows, n_rows, expected)
        geo = snap.geo if not batch.geo else np.concatenate(
            [snap.geo, np.asarray(batch.geo, dtype=np.float64)])
        self._snap = _Snapshot(n_rows, ints, codes, floats, dict(self._flags),
                               snap.multi or batch.multi, geo)
        self.rows_indexed = n_rows

    def _set_flags(self, name: str, rows: list[int], n_rows: int, expected: int) -> None:
        buf = self._flags[name]
        if buf is None or buf.size < n_rows:
            # A fresh buffer: published snapshots keep reading the old one.
            size = expected if buf is None else max(expected, 2 * buf.size)
            grown = np.zeros(size, np.bool_)
            if buf is not None:
                grown[: buf.size] = buf
            buf = self._flags[name] = grown
        # Rows at or past every published snapshot's count: nobody reads them yet.
        buf[np.asarray(rows, np.int64)] = True

    # -- queries: each returns a mask of length n --------------------------
    @staticmethod
    def _flag(snap: _Snapshot, name: str, n: int) -> Mask:
        mask = np.zeros(n, dtype=np.bool_)
        buf = snap.flags[name]
        if buf is not None:
            # A buffer no row has needed lately may end before the snapshot's rows.
            stop = min(n, snap.rows, buf.size)
            mask[:stop] = buf[:stop]
        return mask

    @staticmethod
    def _mask(snap: _Snapshot, n: int, parts: Sequence[Rows]) -> Mask:
        mask = np.zeros(n, dtype=np.bool_)
        for rows in parts:
            _assign(mask, rows, n < snap.rows, True)
        return mask

    def _eq_rows(self, snap: _Snapshot, values: Sequence[Any]) -> list[Rows]:
        parts = []
        for value in values:
            key = eq_key(value)
            if key is None:
                continue
            if _is_i64(key):
                parts.append(snap.ints.rows_of(int(key)))  # type: ignore[arg-type]
            elif (code := self._code_of.get(key)) is not None:
                parts.append(snap.codes.rows_of(code))
        return parts

    def match_rows(self, values: Sequence[Any], n: int) -> npt.NDArray[np.int64]:
        """The rows below ``n`` holding any of ``values``, each once (no mask: a
        selective filter goes straight to scoring its few rows)."""
        snap = self._snap
        parts = self._eq_rows(snap, values)
        if not parts:
            return np.empty(0, dtype=np.int64)
        rows = (parts[0] if len(parts) == 1 else np.concatenate(parts)).astype(np.int64)
        if n < snap.rows:
            rows = rows[rows < n]
        if snap.multi:  # a row holding several of the values is listed under each
            rows = np.unique(rows)
        return rows

    def value_counts(self, allowed: Mask | None, n: int) -> list[tuple[EqKey, int]]:
        """How many of the rows below ``n`` that ``allowed`` admits (all when None)
        hold each equality key: a facet, one ``bincount`` per postings array. A row
        holding a key twice (``["a", "a"]``) counts once, as in Qdrant."""
        snap = self._snap
        out: list[tuple[EqKey, int]] = []
        for postings, decode in ((snap.ints, None), (snap.codes, self._code_keys)):
            if postings.keys.size == 0:
                continue
            rows, indptr = postings.rows, postings.indptr
            owner = np.repeat(np.arange(postings.keys.size), np.diff(indptr))
            keep = rows < n
            if allowed is not None:
                inside = np.flatnonzero(keep)
                keep[inside] = allowed[rows[inside]]
            if snap.multi:  # a (key, row) pair once
                pairs = np.unique(owner[keep].astype(np.int64) * (n + 1) + rows[keep])
                counts = np.bincount(pairs // (n + 1), minlength=postings.keys.size)
            else:
                counts = np.bincount(owner[keep], minlength=postings.keys.size)
            for i in np.flatnonzero(counts).tolist():
                key = postings.keys[i]
                out.append((int(key) if decode is None else decode[int(key)], int(counts[i])))
        return out

    def numbers(self, allowed: Mask | None, n: int, integers: bool = False
                ) -> tuple[F64 | I64, Rows, Mask]:
        """Every number held by the rows below ``n`` that ``allowed`` admits, as
        (values, rows, which values are integers), for ordering by the field.
        ``integers``: only the 64-bit integers, as exact int64 values."""
        snap = self._snap
        ints, floats = snap.ints, snap.floats
        int_values = np.repeat(ints.keys, np.diff(ints.indptr))
        values: F64 | I64
        if integers:
            values, rows = int_values, ints.rows.astype(np.int64)
        else:
            values = np.concatenate([int_values.astype(np.float64), floats.values])
            rows = np.concatenate([ints.rows.astype(np.int64), floats.rows.astype(np.int64)])
        is_int = np.zeros(values.size, dtype=bool)
        is_int[:ints.rows.size] = True
        keep = rows < n
        if allowed is not None:
            inside = np.flatnonzero(keep)
            keep[inside] = allowed[rows[inside]]
        return values[keep], rows[keep], is_int[keep]

    def match_any(self, values: Sequence[Any], n: int) -> Mask:
        snap = self._snap
        return self._mask(snap, n, self._eq_rows(snap, values))

    def match_except(self, values: Sequence[Any], n: int) -> Mask:
        """Rows holding at least one value outside ``values``."""
        snap = self._snap
        banned = self._eq_rows(snap, list({k: v for v in values
                                           if (k := eq_key(v)) is not None}.values()))
        if not snap.multi:
            # One equality key per row at most: its rows minus the banned keys' rows.
            mask = self._flag(snap, "eq_any", n)
            for rows in banned:
                _assign(mask, rows, n < snap.rows, False)
        else:
            size = max(n, snap.rows)
            held = np.bincount(snap.ints.rows, minlength=size)
            held += np.bincount(snap.codes.rows, minlength=size)
            for rows in banned:
                held -= np.bincount(rows, minlength=size)
            mask = held[:n] > 0
        # Floats and objects are never one of the listed keywords/integers.
        mask |= self._flag(snap, "other", n)
        return mask

    def values_count(self, n: int, gt: float | None = None, gte: float | None = None,
                     lt: float | None = None, lte: float | None = None) -> Mask:
        """Rows below ``n`` whose number of values at the path (array elements, or
        1 for a single value; numbers, strings and booleans; 0 when missing) is
        within the bounds."""
        snap = self._snap
        size = max(n, snap.rows)
        counts = (np.bincount(snap.ints.rows, minlength=size)
                  + np.bincount(snap.codes.rows, minlength=size)
                  + np.bincount(snap.floats.rows, minlength=size))[:n]
        return _within(counts, gt, gte, lt, lte)

    def geo_mask(self, n: int, inside: Callable[[F64, F64], Mask]) -> Mask:
        """Rows below ``n`` holding a geo point (``{"lon", "lat"}``) for which
        ``inside(lons, lats)`` holds."""
        geo = self._snap.geo
        mask = np.zeros(n, dtype=np.bool_)
        if geo.size:
            rows = geo[:, 0].astype(np.int64)
            hit = inside(geo[:, 1], geo[:, 2]) & (rows < n)
            mask[rows[hit]] = True
        return mask

    def _code_epochs(self) -> F64:
        """Seconds since the epoch of every string key that reads as an RFC 3339 /
        ISO 8601 datetime (NaN for the others), by code; parsed once per key and
        extended as keys are added (codes are append-only)."""
        with self._lock:
            have = self._epochs
            total = len(self._code_keys)
            if have.size < total:
                fresh = np.full(total - have.size, np.nan)
                for i, key in enumerate(self._code_keys[have.size:total]):
                    if isinstance(key, str):
                        fresh[i] = parse_datetime(key)
                self._epochs = have = np.concatenate([have, fresh])
            return have

    def datetime_range(self, n: int, gt: float | None = None, gte: float | None = None,
                       lt: float | None = None, lte: float | None = None) -> Mask:
        """Rows below ``n`` holding a datetime string within the bounds (seconds
        since the epoch)."""
        snap = self._snap
        codes = snap.codes
        epochs = self._code_epochs()[codes.keys] if codes.keys.size else np.empty(0)
        ok = _within(epochs, gt, gte, lt, lte)  # NaN (not a datetime) is never within
        rows = codes.rows[np.repeat(ok, np.diff(codes.indptr))]
        mask = np.zeros(n, dtype=np.bool_)
        mask[rows[rows < n]] = True
        return mask

    def match_tokens(self, query: str, mode: str, params: TextIndexParams, n: int) -> Mask:
        """Rows whose string value matches ``query`` under a text index's
        tokenizer (``text.py``): all tokens, any of them, or a phrase."""
        index = self._texts.get(params)
        if index is None:
            with self._lock:
                index = self._texts.setdefault(params, TokenIndex(params))
        snap = self._snap
        index.catch_up(self._code_keys[:])
        # A key coded after this snapshot was taken has no rows in it.
        parts = [snap.codes.rows_of(code) for code in sorted(index.codes(query, mode))]
        return self._mask(snap, n, parts)

    def match_text(self, text: str, n: int) -> Mask:
        snap = self._snap
        # A key coded after this snapshot was taken has no rows in it.
        parts = [snap.codes.rows_of(code) for code, key in enumerate(self._code_keys[:])
                 if isinstance(key, str) and text in key]
        return self._mask(snap, n, parts)

    def range(
        self,
        n: int,
        gt: float | None = None,
        gte: float | None = None,
        lt: float | None = None,
        lte: float | None = None,
    ) -> Mask:
        snap = self._snap
        parts = []
        keys = snap.ints.keys
        if keys.size:
            lo, hi = _int_bounds(keys, gt, gte, lt, lte)
            if lo < hi:
                parts.append(snap.ints.slice_rows(lo, hi))
        values = snap.floats.values
        if values.size:
            lo, hi = _bounds(values, gt, gte, lt, lte)
            if lo < hi:
                parts.append(snap.floats.rows[lo:hi])
        return self._mask(snap, n, parts)

    def present(self, n: int) -> Mask:
        return self._flag(self._snap, "present", n)

    def null(self, n: int) -> Mask:
        """Rows where the path holds null itself (``{"is_null": {"key": ...}}``)."""
        return self._flag(self._snap, "null", n)

    def has_null(self, n: int) -> Mask:
        """Rows where the path holds null or an array containing null (the
        ``{"key": ..., "is_null": true}`` form)."""
        return self._flag(self._snap, "has_null", n)

    # -- persistence (sealed segments) --------------------------------------
    def save(self, path: Path) -> None:
        snap = self._snap
        arrays: dict[str, Any] = {
            f"flag_{name}": np.packbits(self._flag(snap, name, snap.rows), bitorder="little")
            if snap.flags[name] is not None else np.empty(0, np.uint8) for name in _FLAGS}
        with open(path, "wb") as fh:
            np.savez(
                fh,
                version=np.asarray([FORMAT_VERSION], dtype=np.int64),
                path=np.frombuffer(self.path.encode(), dtype=np.uint8),
                rows_indexed=np.asarray([snap.rows], dtype=np.int64),
                multi=np.asarray([snap.multi], dtype=np.bool_),
                int_keys=snap.ints.keys,
                int_indptr=snap.ints.indptr,
                int_rows=snap.ints.rows,
                # The keys of the codes in the postings, in code order: they are
                # numbered 0..K-1 again when loaded.
                code_keys=np.frombuffer(orjson.dumps(
                    [_encode_key(self._code_keys[c]) for c in snap.codes.keys.tolist()]),
                    dtype=np.uint8),
                code_indptr=snap.codes.indptr,
                code_rows=snap.codes.rows,
                float_values=snap.floats.values,
                float_rows=snap.floats.rows,
                geo=snap.geo,
                **arrays,
                has_flag=np.asarray([snap.flags[name] is not None for name in _FLAGS]),
            )

    @classmethod
    def load(cls, path: Path) -> FieldIndex | None:
        """The saved index, or None when it was saved in another format."""
        with np.load(path) as data:
            if "version" not in data or int(data["version"][0]) != FORMAT_VERSION:
                return None
            index = cls(bytes(data["path"]).decode())
            rows = int(data["rows_indexed"][0])
            for key in orjson.loads(bytes(data["code_keys"])):
                index._code_of[_decode_key(key)] = len(index._code_keys)
                index._code_keys.append(_decode_key(key))
            has_flag = data["has_flag"]
            for i, name in enumerate(_FLAGS):
                if has_flag[i]:
                    bits = np.unpackbits(data[f"flag_{name}"], count=rows, bitorder="little")
                    index._flags[name] = bits.view(np.bool_)
            index._snap = _Snapshot(
                rows,
                _Postings(data["int_keys"], data["int_indptr"], data["int_rows"]),
                _Postings(np.arange(len(index._code_keys), dtype=np.int64),
                          data["code_indptr"], data["code_rows"]),
                _Sorted(data["float_values"], data["float_rows"]),
                dict(index._flags),
                bool(data["multi"][0]),
                data["geo"],
            )
            index.rows_indexed = rows
        return index


def _within(values: npt.NDArray[Any], gt: float | None, gte: float | None,
            lt: float | None, lte: float | None) -> Mask:
    """Which values lie within the bounds given (None: no bound)."""
    mask = np.ones(values.shape, dtype=np.bool_)
    for bound, test in ((gt, np.greater), (gte, np.greater_equal), (lt, np.less),
                        (lte, np.less_equal)):
        if bound is not None:
            mask &= test(values, bound)
    return mask


def _is_geo(value: dict[str, Any]) -> bool:
    lon, lat = value.get("lon"), value.get("lat")
    return (isinstance(lon, (int, float)) and isinstance(lat, (int, float))
            and not isinstance(lon, bool) and not isinstance(lat, bool)
            and -180 <= lon <= 180 and -90 <= lat <= 90)


def parse_datetime(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 / ISO 8601 datetime ('2024-05-01',
    '2024-05-01T10:00:00Z', '2024-05-01 10:00:00.5+02:00'; no zone: UTC), NaN
    when the text is not one."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return math.nan
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _assign(mask: Mask, rows: Rows, cut: bool, value: bool) -> None:
    """``mask[rows] = value``, rows past the mask's end left out when ``cut``."""
    if rows.size == 0:
        return
    # numpy indexes with intp; an int32 index array converted first is
    # several times faster than one converted inside the assignment.
    rows = rows.astype(np.intp, copy=False)
    mask[rows[rows < mask.size] if cut else rows] = value


def _encode_key(key: EqKey) -> list[Any]:
    if isinstance(key, tuple):
        return ["b", key[1]]
    if isinstance(key, str):
        return ["s", key]
    return ["i", str(key)]  # beyond int64: JSON numbers that size need not survive


def _decode_key(raw: list[Any]) -> EqKey:
    tag, value = raw
    if tag == "b":
        return ("b", bool(value))
    if tag == "s":
        return str(value)
    return int(value)


def _bounds(values: F64, gt: float | None, gte: float | None, lt: float | None,
            lte: float | None) -> tuple[int, int]:
    """[lo, hi) of the sorted ``values`` within the bounds."""
    lo, hi = 0, values.size
    if gte is not None:
        lo = max(lo, int(values.searchsorted(gte, side="left")))
    if gt is not None:
        lo = max(lo, int(values.searchsorted(gt, side="right")))
    if lte is not None:
        hi = min(hi, int(values.searchsorted(lte, side="right")))
    if lt is not None:
        hi = min(hi, int(values.searchsorted(lt, side="left")))
    return lo, hi


def _int_bounds(keys: I64, gt: float | None, gte: float | None, lt: float | None,
                lte: float | None) -> tuple[int, int]:
    """[lo, hi) of the sorted integer ``keys`` whose float value is within the
    bounds (integers compare as floats, as JSON numbers do)."""
    if math.inf in (gt, gte) or -math.inf in (lt, lte):
        return 0, 0
    gt, gte = (None if b == -math.inf else b for b in (gt, gte))
    lt, lte = (None if b == math.inf else b for b in (lt, lte))
    if any(b is not None and abs(b) >= _FLOAT_EXACT for b in (gt, gte, lt, lte)):
        # Rare: compare as floats (float() is monotonic, so the keys stay sorted).
        return _bounds(keys.astype(np.float64), gt, gte, lt, lte)
    # A bound within +-2**53 has exact integer neighbours, and keys beyond that
    # range convert to floats beyond the bound too: integer comparison agrees.
    lo, hi = 0, keys.size
    if gte is not None:
        lo = max(lo, int(keys.searchsorted(math.ceil(gte), side="left")))
    if gt is not None:
        lo = max(lo, int(keys.searchsorted(math.floor(gt), side="right")))
    if lte is not None:
        hi = min(hi, int(keys.searchsorted(math.floor(lte), side="right")))
    if lt is not None:
        hi = min(hi, int(keys.searchsorted(math.ceil(lt), side="left")))
    return lo, hi
