"""Per-segment payload field indexes.

A ``FieldIndex`` maps the values found at one payload path to the segment rows
holding them: equality lookups through a hash map (keywords, integers,
booleans), ranges through a sorted numeric array, and presence/null sets for
``is_empty``/``is_null``. Every filter condition resolves to a boolean row
mask with numpy operations, so filtered search never calls Python per
candidate.

The index is append-only, like the segments it belongs to (an overwrite is a
new row plus a tombstone), which is what lets the mutable segment keep one
incrementally: ``catch_up`` indexes only rows added since the last query.
Sealed segments persist indexes of declared fields and build the others on
first use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from peregrine.vector.paths import nodes_at, parse_path

Mask = npt.NDArray[np.bool_]
Rows = npt.NDArray[np.int64]
EqKey = str | int | tuple[str, bool]

PAYLOAD_INDEX_TYPES = ("keyword", "integer", "float", "bool")
# Saved indexes of another version are rebuilt from the payloads (version 1
# read array elements through key steps, which Qdrant's paths do not).
FORMAT_VERSION = 2


def eq_key(value: Any) -> EqKey | None:
    """Hash key for equality: keeps True apart from 1, as JSON does."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, str)):
        return value
    return None


class FieldIndex:
    """Index of one payload path over rows [0, rows_indexed) of a segment."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._steps = parse_path(path)
        self._eq: dict[EqKey, list[int]] = {}
        self._num_values: list[float] = []
        self._num_rows: list[int] = []
        self._present: list[int] = []
        self._null: list[int] = []
        self._has_null: list[int] = []
        self._other: list[int] = []
        self.rows_indexed = 0
        self._lock = threading.Lock()
        # Frozen numpy views, rebuilt when rows_indexed has moved on.
        self._frozen_at = -1
        self._eq_np: dict[EqKey, Rows] = {}
        self._num_sorted: tuple[npt.NDArray[np.float64], Rows] = (
            np.empty(0, np.float64),
            np.empty(0, np.int64),
        )
        self._present_np: Rows = np.empty(0, np.int64)
        self._null_np: Rows = np.empty(0, np.int64)
        self._has_null_np: Rows = np.empty(0, np.int64)
        self._other_np: Rows = np.empty(0, np.int64)

    def catch_up(self, payload_of: Callable[[int], dict[str, Any] | None], n_rows: int) -> None:
        if n_rows <= self.rows_indexed:
            return
        with self._lock:
            for row in range(self.rows_indexed, n_rows):
                self._add(row, payload_of(row))
            self.rows_indexed = max(self.rows_indexed, n_rows)

    def _add(self, row: int, payload: dict[str, Any] | None) -> None:
        nodes = nodes_at(payload, self._steps) if payload else []
        # Qdrant: empty = missing, null or []; a non-empty array (even [null]) is not.
        if any(node is not None and node != [] for node in nodes):
            self._present.append(row)
        if any(node is None for node in nodes):
            self._null.append(row)
        if any(node is None or (isinstance(node, list) and None in node) for node in nodes):
            self._has_null.append(row)
        other = False
        for node in nodes:
            for value in node if isinstance(node, list) else (node,):
                if value is None:
                    continue
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._num_values.append(float(value))
                    self._num_rows.append(row)
                key = eq_key(value)
                if key is not None:
                    self._eq.setdefault(key, []).append(row)
                else:
                    other = True  # floats, objects: never equal to a keyword/integer
        if other:
            self._other.append(row)

    def _freeze(self) -> None:
        if self._frozen_at == self.rows_indexed:
            return
        with self._lock:
            eq = {k: np.asarray(v, dtype=np.int64) for k, v in self._eq.items()}
            values = np.asarray(self._num_values, dtype=np.float64)
            rows = np.asarray(self._num_rows, dtype=np.int64)
            order = np.argsort(values, kind="stable")
            self._eq_np = eq
            self._num_sorted = (values[order], rows[order])
            self._present_np = np.unique(np.asarray(self._present, dtype=np.int64))
            self._null_np = np.unique(np.asarray(self._null, dtype=np.int64))
            self._has_null_np = np.unique(np.asarray(self._has_null, dtype=np.int64))
            self._other_np = np.unique(np.asarray(self._other, dtype=np.int64))
            self._frozen_at = self.rows_indexed

    # -- queries: each returns a mask of length n --------------------------
    @staticmethod
    def _mask(n: int, rows: Rows) -> Mask:
        mask = np.zeros(n, dtype=np.bool_)
        if rows.size:
            mask[rows[rows < n]] = True
        return mask

    def match_any(self, values: Sequence[Any], n: int) -> Mask:
        self._freeze()
        hits = [self._eq_np[k] for v in values if (k := eq_key(v)) is not None and k in self._eq_np]
        if not hits:
            return np.zeros(n, dtype=np.bool_)
        return self._mask(n, np.concatenate(hits))

    def match_except(self, values: Sequence[Any], n: int) -> Mask:
        """Rows holding at least one value outside ``values``."""
        self._freeze()
        banned = {k for v in values if (k := eq_key(v)) is not None}
        keep = [rows for k, rows in self._eq_np.items() if k not in banned]
        mask = self._mask(n, np.concatenate(keep)) if keep else np.zeros(n, dtype=np.bool_)
        # Floats and objects are never one of the listed keywords/integers.
        mask |= self._mask(n, self._other_np)
        return mask

    def match_text(self, text: str, n: int) -> Mask:
        self._freeze()
        hits = [rows for k, rows in self._eq_np.items() if isinstance(k, str) and text in k]
        return self._mask(n, np.concatenate(hits)) if hits else np.zeros(n, dtype=np.bool_)

    def range(
        self,
        n: int,
        gt: float | None = None,
        gte: float | None = None,
        lt: float | None = None,
        lte: float | None = None,
    ) -> Mask:
        self._freeze()
        values, rows = self._num_sorted
        lo, hi = 0, values.size
        if gte is not None:
            lo = max(lo, int(np.searchsorted(values, gte, side="left")))
        if gt is not None:
            lo = max(lo, int(np.searchsorted(values, gt, side="right")))
        if lte is not None:
            hi = min(hi, int(np.searchsorted(values, lte, side="right")))
        if lt is not None:
            hi = min(hi, int(np.searchsorted(values, lt, side="left")))
        if lo >= hi:
            return np.zeros(n, dtype=np.bool_)
        return self._mask(n, rows[lo:hi])

    def present(self, n: int) -> Mask:
        self._freeze()
        return self._mask(n, self._present_np)

    def null(self, n: int) -> Mask:
        """Rows where the path holds null itself (``{"is_null": {"key": ...}}``)."""
        self._freeze()
        return self._mask(n, self._null_np)

    def has_null(self, n: int) -> Mask:
        """Rows where the path holds null or an array containing null (the
        ``{"key": ..., "is_null": true}`` form)."""
        self._freeze()
        return self._mask(n, self._has_null_np)

    # -- persistence (sealed segments) --------------------------------------
    def save(self, path: Path) -> None:
        self._freeze()
        keys = list(self._eq_np)
        counts = np.asarray([self._eq_np[k].size for k in keys], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        eq_rows = np.concatenate([self._eq_np[k] for k in keys]) if keys else np.empty(0, np.int64)
        encoded = [[k[0], k[1]] if isinstance(k, tuple) else k for k in keys]
        with open(path, "wb") as fh:
            np.savez(
                fh,
                path=np.frombuffer(self.path.encode(), dtype=np.uint8),
                keys=np.frombuffer(orjson.dumps(encoded), dtype=np.uint8),
                indptr=indptr,
                eq_rows=eq_rows,
                num_values=self._num_sorted[0],
                num_rows=self._num_sorted[1],
                present=self._present_np,
                null=self._null_np,
                has_null=self._has_null_np,
                version=np.asarray([FORMAT_VERSION], dtype=np.int64),
                other=self._other_np,
                rows_indexed=np.asarray([self.rows_indexed], dtype=np.int64),
            )

    @classmethod
    def load(cls, path: Path) -> FieldIndex | None:
        """The saved index, or None when it was saved in an older format."""
        with np.load(path) as data:
            if "version" not in data or int(data["version"][0]) != FORMAT_VERSION:
                return None
            index = cls(bytes(data["path"]).decode())
            raw_keys = orjson.loads(bytes(data["keys"]))
            indptr = data["indptr"]
            eq_rows = data["eq_rows"]
            eq: dict[EqKey, Rows] = {}
            for i, k in enumerate(raw_keys):
                key: EqKey = (k[0], bool(k[1])) if isinstance(k, list) else k
                eq[key] = eq_rows[indptr[i] : indptr[i + 1]]
            index._eq_np = eq
            index._num_sorted = (data["num_values"], data["num_rows"])
            index._present_np = data["present"]
            index._null_np = data["null"]
            index._has_null_np = data["has_null"]
            index._other_np = data["other"]
            index.rows_indexed = int(data["rows_indexed"][0])
        index._frozen_at = index.rows_indexed
        return index
