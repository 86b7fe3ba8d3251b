"""The state face's caches over HTTP, part of the ``/state`` protocol.

| route | what |
|---|---|
| ``GET /state/results/{key}`` | ``{"value": ...}`` (404 when absent or expired) |
| ``PUT /state/results/{key}`` | ``{"value": <JSON>, "ttl_s"?}``: keep a result |
| ``DELETE /state/results/{key}`` | ``{"deleted": true|false}`` |
| ``POST /state/embeddings/lookup`` | ``{"model", "texts"}`` -> ``{"vectors": [...]}``, |
| | a vector or null per text |
| ``PUT /state/embeddings`` | ``{"model", "texts", "vectors"}`` -> ``{"stored": n}`` |
| ``POST /state/semantic/lookup`` | ``{"prompt"}`` -> ``{"hit": ...}``: null, or |
| | ``{"answer", "prompt", "score"}`` |
| ``PUT /state/semantic`` | ``{"prompt", "answer"}``: cache an answer |
| ``GET /state/caches`` | sizes, bounds, hits and misses of each cache |

Result keys are per tenant (``x-tenant``) and stored as HMACs; embeddings are
keyed by tenant, model and normalized text.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field

from peregrine.core.errors import InvalidInputError, NotFoundError
from peregrine.edge.http.protocol import Access, Call, Operation
from peregrine.state.service import StateService, embedding_key

MAX_TEXTS = 256  # texts per embeddings call
MAX_TEXT = 64 * 1024  # characters of one text
MAX_DIM = 8192


class NewResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: Any
    ttl_s: float | None = Field(None, gt=0)


class EmbeddingLookup(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=256)
    texts: list[str] = Field(min_length=1, max_length=MAX_TEXTS)


class NewEmbeddings(EmbeddingLookup):
    vectors: list[list[float]] = Field(min_length=1, max_length=MAX_TEXTS)


class SemanticLookup(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1, max_length=MAX_TEXT)


class NewSemantic(SemanticLookup):
    answer: str


def _texts(texts: list[str]) -> None:
    if any(len(t) > MAX_TEXT for t in texts):
        raise InvalidInputError(f"a text is at most {MAX_TEXT} characters")


def cache_operations(state: StateService, tenant: Any) -> list[Operation]:
    """The routes above; ``tenant(call)`` names the caller's tenant."""

    def _scoped(call: Call, model: str) -> str:
        """Vectors written over HTTP are the tenant's own: no tenant can change what
        another reads back."""
        return f"{tenant(call)}\x00{model}"

    async def get_result(call: Call) -> Any:
        found = await call.run(state.get_result, call.path["key"], tenant(call))
        if found is None:
            raise NotFoundError(f"no result cached under {call.path['key']!r}")
        try:
            return {"value": orjson.loads(found)}
        except orjson.JSONDecodeError:  # bytes kept through the Python API
            return {"value_base64": base64.b64encode(found).decode()}

    async def put_result(call: Call) -> Any:
        body: NewResult = call.body
        try:
            value = orjson.dumps(body.value)
        except TypeError as exc:  # orjson.JSONEncodeError: nested too deeply
            raise InvalidInputError(f"value is not storable JSON: {exc}") from None
        await call.run(state.put_result, call.path["key"], value, body.ttl_s, tenant(call))
        return {"stored": True}

    async def delete_result(call: Call) -> Any:
        return {"deleted": await call.run(state.delete_result, call.path["key"],
                                          tenant(call))}

    async def lookup_embeddings(call: Call) -> Any:
        body: EmbeddingLookup = call.body
        _texts(body.texts)

        def lookup() -> list[list[float] | None]:
            out: list[list[float] | None] = []
            model = _scoped(call, body.model)
            for text in body.texts:
                found = state.embeddings.get(embedding_key(model, text))
                out.append(None if found is None
                           else np.frombuffer(found, dtype="<f4").tolist())
            return out

        return {"vectors": await call.run(lookup)}

    async def put_embeddings(call: Call) -> Any:
        body: NewEmbeddings = call.body
        _texts(body.texts)
        if len(body.vectors) != len(body.texts):
            raise InvalidInputError("texts and vectors must have the same length")
        if any(not 1 <= len(v) <= MAX_DIM for v in body.vectors):
            raise InvalidInputError(f"a vector has 1-{MAX_DIM} numbers")
        packed = [np.asarray(v, dtype="<f4") for v in body.vectors]
        if not all(np.isfinite(v).all() for v in packed):
            raise InvalidInputError("vectors must be finite numbers")

        def store() -> int:
            model = _scoped(call, body.model)
            for text, vector in zip(body.texts, packed, strict=True):
                state.embeddings.put(embedding_key(model, text), vector.tobytes())
            return len(packed)

        return {"stored": await call.run(store)}

    async def semantic_lookup(call: Call) -> Any:
        body: SemanticLookup = call.body
        hit = await call.run(state.semantic_lookup, body.prompt, tenant(call))
        return {"hit": None if hit is None else
                {"answer": hit.answer, "prompt": hit.prompt, "score": hit.score}}

    async def semantic_store(call: Call) -> Any:
        body: NewSemantic = call.body
        await call.run(state.semantic_store, body.prompt, body.answer, tenant(call))
        return {"stored": True}

    async def caches(call: Call) -> Any:
        return state.cache_stats()

    R = "/results/{key}"
    return [
        Operation("GET", R, "get_result", "state", "A cached result", get_result),
        Operation("PUT", R, "put_result", "state", "Cache a result", put_result,
                  Access.WRITE, NewResult),
        Operation("DELETE", R, "delete_result", "state", "Drop a cached result",
                  delete_result, Access.WRITE),
        Operation("POST", "/embeddings/lookup", "lookup_embeddings", "state",
                  "Cached vectors of texts (null where missing)", lookup_embeddings,
                  body=EmbeddingLookup),
        Operation("PUT", "/embeddings", "put_embeddings", "state", "Cache vectors of texts",
                  put_embeddings, Access.WRITE, NewEmbeddings, bulk=True),
        Operation("POST", "/semantic/lookup", "semantic_lookup", "state",
                  "The cached answer of a similar prompt", semantic_lookup,
                  body=SemanticLookup),
        Operation("PUT", "/semantic", "semantic_store", "state",
                  "Cache the answer of a prompt", semantic_store, Access.WRITE, NewSemantic),
        Operation("GET", "/caches", "cache_stats", "state", "Cache sizes, hits and misses",
                  caches),
    ]
