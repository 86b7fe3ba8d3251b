"""The route table: every operation the server answers."""

from __future__ import annotations

from peregrine.api.operation import Operation
from peregrine.api.routes import collections, points, search, service, snapshots


def all_operations() -> list[Operation]:
    return [*service.OPERATIONS, *collections.OPERATIONS, *points.OPERATIONS,
            *search.OPERATIONS, *snapshots.OPERATIONS]
