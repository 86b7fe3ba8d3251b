"""Where the upsert and query stages go: the vector store face.

A pipeline inside ``peregrine serve`` writes through the process's own
``VectorService``; a ``peregrine worker`` process writes to a server over its
REST API, with msgpack bodies and raw float32 vectors (no float parsing), and
Peregrine's ``version_key`` extension for idempotent writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

import msgpack
import numpy as np
import orjson

from peregrine.core.errors import AlreadyExistsError, InvalidInputError, NotFoundError

_MSGPACK = {"content-type": "application/msgpack"}


class SinkUnavailableError(RuntimeError):
    """The store did not answer, or answered 5xx: the batch is retried."""


class VectorSink(Protocol):
    async def create_collection(self, collection: str, dim: int, distance: str,
                                keyword_fields: Sequence[str]) -> None:
        """Create it (and keyword indexes) unless it exists; another worker
        creating it at the same time is not an error."""

    async def upsert(self, collection: str, ids: Sequence[Any], vectors: np.ndarray,
                     payloads: Sequence[dict[str, Any]], version_key: str) -> None: ...

    async def search(self, collection: str, vectors: np.ndarray, k: int,
                     filters: Sequence[dict[str, Any] | None], with_payload: bool
                     ) -> list[list[dict[str, Any]]]: ...

    async def alias_target(self, alias: str) -> str | None:
        """The collection ``alias`` names, or None when it is no alias."""

    async def point_alias(self, alias: str, collection: str) -> None:
        """Point ``alias`` at ``collection`` in one atomic step (readers switch)."""

    async def collection_exists(self, name: str) -> bool:
        """Whether ``name`` finds a collection (directly or as an alias)."""

    async def close(self) -> None: ...


class LocalVectorSink:
    """The vector store of this process (a ``VectorService``), off the event loop."""

    def __init__(self, vector: Any) -> None:
        self.vector = vector

    async def create_collection(self, collection: str, dim: int, distance: str,
                                keyword_fields: Sequence[str]) -> None:
        def run() -> None:
            try:
                self.vector.create_collection(collection, dim, distance.lower())
            except AlreadyExistsError:
                return
            for name in keyword_fields:
                self.vector.create_payload_index(collection, name, "keyword")

        await asyncio.to_thread(run)

    async def alias_target(self, alias: str) -> str | None:
        found = await asyncio.to_thread(self.vector.list_aliases)
        return next((a.collection for a in found if a.alias == alias), None)

    async def point_alias(self, alias: str, collection: str) -> None:
        from peregrine.vector.service import CreateAlias

        await asyncio.to_thread(self.vector.update_aliases, [CreateAlias(alias, collection)])

    async def collection_exists(self, name: str) -> bool:
        return bool(await asyncio.to_thread(self.vector.collection_exists, name))

    async def upsert(self, collection: str, ids: Sequence[Any], vectors: np.ndarray,
                     payloads: Sequence[dict[str, Any]], version_key: str) -> None:
        await asyncio.to_thread(self.vector.upsert, collection, list(ids), vectors,
                                list(payloads), version_key)

    async def search(self, collection: str, vectors: np.ndarray, k: int,
                     filters: Sequence[dict[str, Any] | None], with_payload: bool
                     ) -> list[list[dict[str, Any]]]:
        from peregrine.vector.service import ReadOptions

        def run() -> list[list[dict[str, Any]]]:
            searches = [(v, ReadOptions(limit=k, filter=f, with_payload=with_payload))
                        for v, f in zip(vectors, filters, strict=True)]
            return [[{"id": h.id, "score": h.score, "payload": h.payload} for h in hits]
                    for hits in self.vector.search_batch(collection, searches)]

        return await asyncio.to_thread(run)

    async def close(self) -> None:
        return None


class HttpVectorSink:
    """A Peregrine server's REST API (``peregrine serve``), one kept-alive client."""

    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 10.0) -> None:
        import httpx

        headers = {"api-key": api_key} if api_key else {}
        self.client = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers,
                                        timeout=timeout_s)

    async def create_collection(self, collection: str, dim: int, distance: str,
                                keyword_fields: Sequence[str]) -> None:
        try:
            await self._call("PUT", f"/collections/{collection}",
                             {"vectors": {"size": dim, "distance": distance.capitalize()}})
        except AlreadyExistsError:
            return
        for name in keyword_fields:
            await self._call("PUT", f"/collections/{collection}/index",
                             {"field_name": name, "field_schema": "keyword"}, {"wait": "true"})

    async def alias_target(self, alias: str) -> str | None:
        found = await self._call("GET", "/aliases", None)
        return next((a["collection_name"] for a in found["aliases"]
                     if a["alias_name"] == alias), None)

    async def point_alias(self, alias: str, collection: str) -> None:
        await self._call("POST", "/collections/aliases", {"actions": [
            {"create_alias": {"alias_name": alias, "collection_name": collection}}]})

    async def collection_exists(self, name: str) -> bool:
        found = await self._call("GET", f"/collections/{name}/exists", None)
        return bool(found["exists"])

    async def _call(self, method: str, path: str, body: dict[str, Any] | None,
                    params: dict[str, str] | None = None) -> Any:
        import httpx

        try:
            content = None if body is None else msgpack.packb(body, use_bin_type=True)
            r = await self.client.request(method, path, params=params, content=content,
                                          headers=_MSGPACK)
        except httpx.HTTPError as exc:
            raise SinkUnavailableError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if r.status_code >= 500 or r.status_code in (408, 429):
            raise SinkUnavailableError(f"{method} {path}: {r.status_code} {r.text[:300]}")
        if r.status_code == 404:
            raise NotFoundError(f"{method} {path}: {r.text[:300]}")
        if r.status_code == 409 or (r.status_code == 400 and "already exists" in r.text):
            raise AlreadyExistsError(f"{method} {path}: {r.text[:300]}")
        if r.status_code >= 400:
            raise InvalidInputError(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return orjson.loads(r.content).get("result")

    async def upsert(self, collection: str, ids: Sequence[Any], vectors: np.ndarray,
                     payloads: Sequence[dict[str, Any]], version_key: str) -> None:
        rows = np.ascontiguousarray(vectors, dtype="<f4")
        await self._call("PUT", f"/collections/{collection}/points",
                         {"batch": {"ids": list(ids), "vectors": rows.tobytes(),
                                    "payloads": list(payloads)}},
                         {"wait": "true", "version_key": version_key})

    async def search(self, collection: str, vectors: np.ndarray, k: int,
                     filters: Sequence[dict[str, Any] | None], with_payload: bool
                     ) -> list[list[dict[str, Any]]]:
        rows = np.ascontiguousarray(vectors, dtype="<f4")
        searches = []
        for v, f in zip(rows, filters, strict=True):
            search: dict[str, Any] = {"vector": v.tobytes(), "limit": k,
                                      "with_payload": with_payload}
            if f:
                search["filter"] = f
            searches.append(search)
        result = await self._call("POST", f"/collections/{collection}/points/search/batch",
                                  {"searches": searches})
        return [[{"id": h["id"], "score": h["score"], "payload": h.get("payload")}
                 for h in hits] for hits in result]

    async def close(self) -> None:
        await self.client.aclose()
