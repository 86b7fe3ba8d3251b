"""Points in the order of a numeric payload field (Qdrant's ``order_by``).

Each segment's field index gives its (value, row) pairs for the rows a filter
admits; a point holding several numbers there is placed once, at its first in
the requested direction. All segments' candidates are then sorted together
(value, then point id for ties) and the first ``limit`` become records carrying
their ``order_value``. Numpy end to end, one sort per request.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from peregrine.core.deadline import check_deadline
from peregrine.vector.collection.results import WithPayload, WithVectors, record
from peregrine.vector.segment.mutable import Segment
from peregrine.vector.segment.payload_index import Mask
from peregrine.vector.types import Record

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def ordered_records(segments: Sequence[Segment], allowed: Callable[[Segment], Mask | None],
                    key: str, descending: bool, start_from: float | None, limit: int,
                    with_payload: WithPayload, with_vectors: WithVectors,
                    integers: bool = False) -> list[Record]:
    """``integers`` (an integer index): only 64-bit integer values, compared and
    sorted exactly; otherwise every number, as float64."""
    bound: float | int | None = start_from
    if integers and start_from is not None:  # the first integer on the right side
        bound = math.floor(start_from) if descending else math.ceil(start_from)
        bound = min(max(bound, _I64_MIN), _I64_MAX)
    values, keys, seg_of, rows, ints = [], [], [], [], []
    for j, seg in enumerate(segments):
        check_deadline()
        v, r, is_int = seg.field_index(key).numbers(allowed(seg), seg.n_rows, integers)
        if bound is not None:
            keep = v <= bound if descending else v >= bound
            v, r, is_int = v[keep], r[keep], is_int[keep]
        if v.size == 0:
            continue
        # One place per point: its first value in the direction asked.
        order = np.lexsort((_downward(v) if descending else v, r))
        first = np.ones(order.size, dtype=bool)
        first[1:] = r[order][1:] != r[order][:-1]
        pick = order[first]
        values.append(v[pick])
        rows.append(r[pick])
        ints.append(is_int[pick])
        keys.append(seg.keys_view()[r[pick]])
        seg_of.append(np.full(pick.size, j))
    if not values:
        return []
    value, key_arr = np.concatenate(values), np.concatenate(keys)
    row, seg_idx, is_int = np.concatenate(rows), np.concatenate(seg_of), np.concatenate(ints)
    order = np.lexsort((key_arr, _downward(value) if descending else value))[:limit]
    out: list[Record] = []
    for i in order.tolist():
        number: Any = int(value[i]) if is_int[i] else float(value[i])
        rec = record(key_arr[i], segments[int(seg_idx[i])], int(row[i]), with_payload,
                     with_vectors)
        out.append(dataclasses.replace(rec, order_value=number))
    return out


def _downward(values: np.ndarray) -> np.ndarray:
    """A sort key that orders ``values`` from the largest: ``~x`` for integers (no
    overflow at the int64 minimum, as negation would), ``-x`` for floats."""
    return ~values if values.dtype.kind == "i" else -values
