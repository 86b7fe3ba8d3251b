"""Collection aliases: change them (atomically, as a list of actions) and list them.

Translation only: what an alias means, and that every other route accepts
one in place of a collection name, is the vector face's business.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peregrine.edge.http.protocol import Access, Call, Operation
from peregrine.edge.qdrant import convert, schemas
from peregrine.edge.qdrant.routes.common import collection_name

if TYPE_CHECKING:
    from peregrine.edge.qdrant.protocol import QdrantProtocol


def operations(protocol: QdrantProtocol) -> list[Operation]:
    vector = protocol.vector

    async def update_aliases(call: Call) -> Any:
        body: schemas.ChangeAliases = call.body
        await call.run(vector.update_aliases,
                       [convert.alias_action(op) for op in body.actions])
        return True

    async def list_aliases(call: Call) -> Any:
        return convert.aliases(await call.run(vector.list_aliases))

    async def collection_aliases(call: Call) -> Any:
        return convert.aliases(await call.run(vector.list_aliases, collection_name(call)))

    return [
        Operation("POST", "/collections/aliases", "update_aliases", "aliases",
                  "Create, delete and rename aliases: all actions in order, all or none",
                  update_aliases, Access.WRITE, schemas.ChangeAliases, schemas.TimeoutParams),
        Operation("GET", "/aliases", "get_collections_aliases", "aliases", "List every alias",
                  list_aliases),
        Operation("GET", "/collections/{collection_name}/aliases", "get_collection_aliases",
                  "aliases", "List the aliases of a collection", collection_aliases),
    ]
