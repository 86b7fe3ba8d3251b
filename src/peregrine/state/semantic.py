"""The semantic response cache: a prompt close enough in meaning to one answered
before gets that answer back, without a call to the model.

Prompts are embedded (any encoder with ``encode(list[str])``, e.g. the built-in
MiniLM behind its SHA-256 cache) and kept in a collection of the vector store,
used through its front door: one point per prompt with the answer, its tenant
and its expiry time in the payload. A lookup is a top-1 search filtered to the
tenant and to entries not yet expired; a hit needs cosine similarity at least
``threshold``. The collection holds at most ``max_entries`` points: past that,
the expired go, then the tenth that expires soonest.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from peregrine.core.errors import InvalidInputError
from peregrine.vector.service import ReadOptions, VectorService


@dataclass(frozen=True)
class SemanticHit:
    answer: str
    prompt: str
    score: float


class SemanticCache:
    def __init__(self, vector: VectorService, encoder: Any, collection: str = "pg_semantic_cache",
                 threshold: float = 0.92, ttl_s: float = 24 * 3600.0,
                 max_answer_bytes: int = 1 << 20, max_entries: int = 100_000,
                 counter: Any = None) -> None:
        if not 0 < threshold <= 1:
            raise InvalidInputError("threshold must be in (0, 1]")
        self.vector, self.encoder, self.collection = vector, encoder, collection
        self.threshold, self.ttl_s, self.max_answer_bytes = threshold, ttl_s, max_answer_bytes
        self.max_entries = max_entries
        self._evicting = threading.Lock()
        self.hits = self.misses = 0
        self._counted = ({r: counter.labels("semantic", r) for r in ("hit", "miss")}
                         if counter is not None else None)
        if not vector.has_collection(collection):
            dim = int(encoder.encode(["dimension probe"]).shape[1])
            vector.create_collection(collection, dim, "cosine")
            vector.create_payload_index(collection, "tenant", "keyword")
            vector.create_payload_index(collection, "expires", "float")

    def _embed(self, prompt: str) -> np.ndarray:
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidInputError("prompt must be a non-empty string")
        return np.asarray(self.encoder.encode([prompt])[0], dtype=np.float32)

    def get(self, prompt: str, tenant: str = "default") -> SemanticHit | None:
        now = time.time()
        flt = {"must": [{"key": "tenant", "match": {"value": tenant}},
                        {"key": "expires", "range": {"gt": now}}]}
        hits = self.vector.search(self.collection, self._embed(prompt),
                                  ReadOptions(limit=1, filter=flt, with_payload=True,
                                              score_threshold=self.threshold))
        if not hits:
            self.misses += 1
            if self._counted is not None:
                self._counted["miss"].inc()
            return None
        self.hits += 1
        if self._counted is not None:
            self._counted["hit"].inc()
        payload = hits[0].payload or {}
        return SemanticHit(str(payload.get("answer", "")), str(payload.get("prompt", "")),
                           float(hits[0].score))

    def put(self, prompt: str, answer: str, tenant: str = "default") -> None:
        if not isinstance(answer, str) or len(answer.encode()) > self.max_answer_bytes:
            raise InvalidInputError(f"answer must be a string of at most "
                                    f"{self.max_answer_bytes} bytes")
        # One point per (tenant, prompt): asking again replaces the answer.
        digest = hashlib.sha256(f"{tenant}\x00{prompt}".encode()).digest()
        point = str(uuid.UUID(bytes=digest[:16]))
        self.vector.upsert(self.collection, [point], self._embed(prompt)[None, :],
                           [{"tenant": tenant, "prompt": prompt, "answer": answer,
                             "expires": time.time() + self.ttl_s}])
        if self.vector.count(self.collection) > self.max_entries:
            with self._evicting:  # one eviction at a time
                if self.vector.count(self.collection) > self.max_entries:
                    self._evict()

    def _evict(self) -> None:
        """Down to 90% of the bound: the expired first, then those expiring soonest."""
        self.purge_expired()
        over = self.vector.count(self.collection) - int(self.max_entries * 0.9)
        if over <= 0:
            return
        expires: list[float] = []
        offset = None
        while True:
            page, offset = self.vector.scroll(self.collection, limit=1000, offset=offset,
                                              with_payload=["expires"])
            expires.extend(float((r.payload or {}).get("expires", 0.0)) for r in page)
            if offset is None:
                break
        if not expires:
            return
        over = min(over, len(expires))
        cut = float(np.partition(np.asarray(expires), over - 1)[over - 1])
        from peregrine.vector.service import PointSelector

        self.vector.delete(self.collection, PointSelector(
            filter={"must": [{"key": "expires", "range": {"lte": cut}}]}))

    def purge_expired(self) -> int:
        from peregrine.vector.service import PointSelector

        flt = {"must": [{"key": "expires", "range": {"lte": time.time()}}]}
        return self.vector.delete(self.collection, PointSelector(filter=flt))
