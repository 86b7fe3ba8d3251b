"""The route table of the Qdrant protocol: every operation it answers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from peregrine.edge.http.protocol import Operation
from peregrine.edge.qdrant.routes import (
    aliases,
    cluster,
    collections,
    points,
    search,
    service,
    snapshots,
)

if TYPE_CHECKING:
    from peregrine.edge.qdrant.protocol import QdrantProtocol


def all_operations(protocol: QdrantProtocol) -> list[Operation]:
    return [*service.operations(protocol), *collections.operations(protocol),
            *aliases.operations(protocol), *points.operations(protocol),
            *search.operations(protocol), *snapshots.operations(protocol),
            *cluster.operations(protocol)]
