"""Nested filters (Qdrant's ``nested``): conditions that one array element
must meet together.

``{"nested": {"key": "diet", "filter": {...}}}`` holds for a point when some
object in its array ``diet`` satisfies the whole inner filter, each condition
read from that same object (where ``diet[].food`` and ``diet[].likes`` would
each be met by any element, perhaps different ones). A ``NestedView`` makes
the objects at ``key`` the rows of a virtual segment, with the same payload
indexes a segment has, so the inner filter compiles and runs as any other;
its matches map back to the points that own them. Views follow their segment's
rows as they arrive, like payload field indexes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from peregrine.vector.errors import InvalidFilterError
from peregrine.vector.ids import KeyArray
from peregrine.vector.paths import nodes_at, parse_path
from peregrine.vector.segment.kernels import I64
from peregrine.vector.segment.payload_index import FieldIndex, Mask
from peregrine.vector.segment.side import SideStore


def cached_view(views: dict[str, NestedView], lock: threading.Lock, key: str,
                payload_of: Callable[[int], dict[str, Any] | None], n_rows: int) -> NestedView:
    """The view of ``key`` from a segment's (or view's) cache, caught up."""
    view = views.get(key)
    if view is None:
        with lock:
            view = views.setdefault(key, NestedView(key))
    view.catch_up(payload_of, n_rows)
    return view


class NestedView:
    """The objects at one array path of a segment's rows, as rows of their own."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._steps = parse_path(key)
        self._objects: list[dict[str, Any] | None] = []
        self._owner: list[int] = []
        self._owners = np.empty(0, np.int64)
        self.rows_done = 0
        self._fields: dict[str, FieldIndex] = {}
        self._inner: dict[str, NestedView] = {}
        self._lock = threading.Lock()

    def catch_up(self, payload_of: Callable[[int], dict[str, Any] | None], n_rows: int) -> None:
        if n_rows <= self.rows_done:
            return
        with self._lock:
            for row in range(self.rows_done, n_rows):
                payload = payload_of(row)
                for node in nodes_at(payload, self._steps) if payload else ():
                    for item in node if isinstance(node, list) else (node,):
                        self._objects.append(item if isinstance(item, dict) else None)
                        self._owner.append(row)
            self._owners = np.asarray(self._owner, dtype=np.int64)
            self.rows_done = n_rows

    @property
    def n_rows(self) -> int:
        return int(self._owners.size)

    def _payload(self, element: int) -> dict[str, Any] | None:
        return self._objects[element]

    def field_index(self, path: str) -> FieldIndex:
        index = self._fields.get(path)
        if index is None:
            with self._lock:
                index = self._fields.setdefault(path, FieldIndex(path))
        index.catch_up(self._payload, self.n_rows)
        return index

    def nested_view(self, key: str) -> NestedView:
        """Arrays inside these objects (a nested filter within a nested filter)."""
        return cached_view(self._inner, self._lock, key, self._payload, self.n_rows)

    def keys_view(self) -> KeyArray:
        raise InvalidFilterError("has_id cannot be used inside a nested filter")

    def side_store(self, dense: dict[str, tuple[int, str]], sparse: list[str],
                   multi: dict[str, int] | None = None) -> SideStore:
        raise InvalidFilterError("has_vector cannot be used inside a nested filter")

    def lacking_primary(self) -> Mask | None:
        raise InvalidFilterError("has_vector cannot be used inside a nested filter")

    def owners(self, matched: Mask, n_rows: int) -> Mask:
        """The rows (below ``n_rows``) owning at least one matched object."""
        rows: I64 = self._owners[matched[: self.n_rows]]
        out = np.zeros(n_rows, dtype=np.bool_)
        out[rows[rows < n_rows]] = True
        return out
