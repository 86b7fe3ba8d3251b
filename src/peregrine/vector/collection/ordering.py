"""Points in the order of a numeric payload field (Qdrant's ``order_by``).

Each segment's field index gives its (value, row) pairs for the rows a filter
admits; a point holding several numbers there is placed once, at its first in
the requested direction. All segments' candidates are then sorted together
(value, then point id for ties) and the first ``limit`` become records carrying
their ``order_value``. Numpy end to end, one sort per request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from peregrine.core.deadline import check_deadline
from peregrine.vector.collection.results import WithPayload, record
from peregrine.vector.segment.mutable import Segment
from peregrine.vector.segment.payload_index import Mask
from peregrine.vector.types import Record


def ordered_records(segments: Sequence[Segment], allowed: Callable[[Segment], Mask | None],
                    key: str, descending: bool, start_from: float | None, limit: int,
                    with_payload: WithPayload, with_vectors: bool) -> list[Record]:
    values, keys, seg_of, rows, ints = [], [], [], [], []
    for j, seg in enumerate(segments):
        check_deadline()
        v, r, is_int = seg.field_index(key).numbers(allowed(seg), seg.n_rows)
        if start_from is not None:
            keep = v <= start_from if descending else v >= start_from
            v, r, is_int = v[keep], r[keep], is_int[keep]
        if v.size == 0:
            continue
        # One place per point: its first value in the direction asked.
        order = np.lexsort((-v if descending else v, r))
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
    order = np.lexsort((key_arr, -value if descending else value))[:limit]
    out: list[Record] = []
    for i in order.tolist():
        number: Any = int(value[i]) if is_int[i] else float(value[i])
        rec = record(key_arr[i], segments[int(seg_idx[i])], int(row[i]), with_payload,
                     with_vectors)
        out.append(dataclasses.replace(rec, order_value=number))
    return out
