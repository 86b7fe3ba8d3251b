"""Qdrant's cluster routes on one node: read as a single-node deployment, and
the distributed-only changes refused with a clear error.

Peregrine runs as one node (scale-out is planned on existing distributed
engines, not home-made consensus); ``GET /cluster`` answers as Qdrant does
with distribution disabled, and a collection's cluster info shows its one
local shard. Shard and peer changes are 400s that say why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peregrine.core.errors import InvalidInputError
from peregrine.edge.http.protocol import Access, Call, Operation
from peregrine.edge.qdrant.routes.common import collection_name

if TYPE_CHECKING:
    from peregrine.edge.qdrant.protocol import QdrantProtocol

SINGLE_NODE = ("cluster mode is not available: Peregrine runs as one node, with one shard "
               "per collection (see docs/server.md)")


def operations(protocol: QdrantProtocol) -> list[Operation]:
    vector = protocol.vector

    async def cluster(call: Call) -> Any:
        return {"status": "disabled"}

    async def collection_cluster(call: Call) -> Any:
        info = await call.run(vector.collection_info, collection_name(call))
        return {"peer_id": 0, "shard_count": 1, "local_shards": [
            {"shard_id": 0, "points_count": info.points, "state": "Active"}],
            "remote_shards": [], "shard_transfers": []}

    async def refused(call: Call) -> Any:
        raise InvalidInputError(SINGLE_NODE)

    W = Access.WRITE
    C = "/collections/{collection_name}"
    return [
        Operation("GET", "/cluster", "cluster_status", "cluster",
                  "Cluster status: distribution is disabled on one node", cluster),
        Operation("GET", C + "/cluster", "collection_cluster_info", "cluster",
                  "The collection's one local shard", collection_cluster),
        Operation("POST", "/cluster/recover", "recover_current_peer", "cluster",
                  "Refused: one node", refused, W),
        Operation("DELETE", "/cluster/peer/{peer_id}", "remove_peer", "cluster",
                  "Refused: one node", refused, W),
        Operation("POST", C + "/cluster", "update_collection_cluster", "cluster",
                  "Refused: one shard per collection", refused, W),
        Operation("PUT", C + "/shards", "create_shard_key", "cluster",
                  "Refused: one shard per collection", refused, W),
        Operation("POST", C + "/shards/delete", "delete_shard_key", "cluster",
                  "Refused: one shard per collection", refused, W),
    ]
