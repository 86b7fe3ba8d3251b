"""The row order of a build, by the payload fields that organise storage.

Qdrant's ``is_tenant`` (keyword and uuid indexes) and ``is_principal``
(integer, float and datetime indexes) say that most filtered requests name
that field: one tenant's points, a time range. A build then writes rows
grouped by tenant value and, within a tenant, ordered by the principal value,
so such a filter selects one run of neighbouring rows: its vectors are read
from a few contiguous pages rather than from all over the segment, and the
payload and side-vector records beside them likewise.

Rows with the same keys keep their arrival order (the sort is stable), and a
row without a usable value for a field sorts after those with one. The
permutation is the only output: the optimizer applies it to the rows it
builds from and to the tombstones it carries over (``holder.swap``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from peregrine.vector import paths
from peregrine.vector.segment.payload_index import parse_datetime
from peregrine.vector.segment.rows import payload_part

ROLE_ORDER = ("tenant", "principal")  # tenants first, then the principal within each


def layout_fields(layout: Mapping[str, str]) -> list[str]:
    """The fields to order by, most significant first."""
    return [f for role in ROLE_ORDER for f, r in layout.items() if r == role]


def layout_order(blob_of: Callable[[int], bytes | memoryview], n: int,
                 fields: Sequence[str], kinds: Mapping[str, str]) -> np.ndarray | None:
    """The build order of ``n`` rows (row ``i`` of the build is row
    ``order[i]`` given), or None when nothing orders them: no field, or rows
    already in order."""
    if not fields or n < 2:
        return None
    parsed = [paths.parse_path(f) for f in fields]
    columns: list[list[Any]] = [[None] * n for _ in fields]
    for row in range(n):
        part = payload_part(blob_of(row))
        if not part:
            continue
        try:
            payload = orjson.loads(part)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(payload, dict):
            continue
        for j, path in enumerate(parsed):
            values = paths.values_at(payload, path)
            if values:
                columns[j][row] = values[0]
    keys = [_sort_key(col, kinds.get(f, "keyword")) for col, f in zip(columns, fields,
                                                                      strict=True)]
    # np.lexsort sorts by its last key first, stably.
    order = np.lexsort(tuple(reversed(keys)))
    if bool((order[1:] > order[:-1]).all()):
        return None
    return order.astype(np.int64)


def _sort_key(values: list[Any], kind: str) -> np.ndarray:
    """A column as numbers to sort by: a missing or unusable value sorts last."""
    if kind in ("integer", "float", "datetime"):
        out = np.full(len(values), np.inf)
        for i, v in enumerate(values):
            if kind == "datetime" and isinstance(v, str):
                t = parse_datetime(v)
                if t == t:
                    out[i] = t
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and kind != "datetime":
                out[i] = float(v)
        return out
    # Keyword and uuid: rank the distinct strings (each tenant one run).
    text = [v if isinstance(v, str) else None for v in values]
    distinct = sorted({v for v in text if v is not None})
    rank = {v: i for i, v in enumerate(distinct)}
    return np.fromiter((rank[v] if v is not None else len(distinct) for v in text),
                       np.int64, len(text))
