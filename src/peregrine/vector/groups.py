"""Search results grouped by a payload field (Qdrant's ``search/groups`` and
``query/groups``): the best ``limit`` groups, each with its best ``group_size``
hits, e.g. the best chunks of the best documents.

The search runs for ``limit * group_size`` candidates first and, while groups
are missing or short and the collection may hold more, again for four times as
many, up to a cap. A point whose field holds an array joins the group of each
value; points without a keyword or integer value there join none. Groups come
in the order of their best hit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from peregrine.core.errors import InvalidInputError
from peregrine.vector import paths
from peregrine.vector.collection.results import WithPayload, select_payload
from peregrine.vector.queries import ReadOptions
from peregrine.vector.types import Hit, Record


@dataclass(frozen=True, slots=True)
class GroupLookup:
    """Points of another collection whose ids are the group values."""

    collection: str
    with_payload: WithPayload = True
    with_vector: bool | Sequence[str] = False


@dataclass(frozen=True, slots=True)
class GroupSpec:
    group_by: str
    group_size: int = 3
    limit: int = 10
    lookup: GroupLookup | None = None


@dataclass(frozen=True, slots=True)
class Group:
    id: str | int
    hits: list[Hit]
    lookup: Record | None = None


def check_spec(spec: GroupSpec, max_limit: int) -> paths.Path:
    if spec.group_size < 1 or spec.limit < 1:
        raise InvalidInputError("group_size and limit must be positive")
    if spec.group_size * spec.limit > max_limit:
        raise InvalidInputError(f"group_size x limit must be at most {max_limit} (max_limit)")
    return paths.parse_path(spec.group_by)


def _group_values(payload: dict[str, Any] | None, path: paths.Path) -> list[str | int]:
    seen: list[str | int] = []
    for v in paths.values_at(payload or {}, path):
        if isinstance(v, (str, int)) and not isinstance(v, bool) and v not in seen:
            seen.append(v)
    return seen


def grouped(search: Callable[[ReadOptions], list[Hit]], options: ReadOptions,
            spec: GroupSpec, cap: int) -> list[Group]:
    """Run ``search`` (a nearest-neighbour read for the given options) as often as
    filling the groups needs, at most ``cap`` candidates at a time."""
    path = paths.parse_path(spec.group_by)
    k = min(cap, spec.limit * spec.group_size)
    while True:
        hits = search(replace(options, limit=k, offset=0, with_payload=True))
        groups: dict[str | int, list[Hit]] = {}
        for hit in hits:
            for value in _group_values(hit.payload, path):
                members = groups.setdefault(value, [])
                if len(members) < spec.group_size:
                    members.append(hit)
        top = list(groups.items())[:spec.limit]
        filled = len(top) == spec.limit and all(len(m) == spec.group_size for _, m in top)
        if filled or len(hits) < k or k >= cap:
            break
        k = min(cap, k * 4)
    return [Group(value, [Hit(h.id, h.score, select_payload(h.payload, options.with_payload),
                              h.vector, h.order_value) for h in members])
            for value, members in top]
