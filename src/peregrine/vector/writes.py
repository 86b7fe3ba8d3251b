"""Write operations as typed values, for a batch of them (``VectorService.batch_update``).

Each mirrors one of the front door's write methods; a batch applies them in
order and atomically (``Collection.batch``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from peregrine.vector.ids import PointId
from peregrine.vector.queries import PointSelector


@dataclass(frozen=True, slots=True)
class UpsertPoints:
    """Points with their vectors as a client gives them (``upsert_points``)."""

    ids: Sequence[PointId]
    vectors: Sequence[Any]
    payloads: Sequence[dict[str, Any] | None] | None = None
    update_filter: dict[str, Any] | None = None
    update_mode: str = "upsert"


@dataclass(frozen=True, slots=True)
class DeletePoints:
    selector: PointSelector


@dataclass(frozen=True, slots=True)
class SetPayload:
    selector: PointSelector
    payload: dict[str, Any]
    overwrite: bool = False


@dataclass(frozen=True, slots=True)
class DeletePayload:
    selector: PointSelector
    keys: Sequence[str]


@dataclass(frozen=True, slots=True)
class ClearPayload:
    selector: PointSelector


@dataclass(frozen=True, slots=True)
class UpdateVectors:
    ids: Sequence[PointId]
    vectors: Sequence[Any]


@dataclass(frozen=True, slots=True)
class DeleteVectors:
    selector: PointSelector
    names: Sequence[str]


WriteOperation = (UpsertPoints | DeletePoints | SetPayload | DeletePayload | ClearPayload
                  | UpdateVectors | DeleteVectors)
