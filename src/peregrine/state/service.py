"""The state face's front door: sessions for LLM applications.

``StateService.open(settings, data)`` opens the tiers under ``<data>/state``:
memory, the local durable store (SQLite, WAL) and, with ``[state] redis``, the
shared Redis tier. Identifiers are stored as HMAC-SHA256 of (tenant, id) with
the node's secret, so raw session and user ids never reach a store.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from peregrine.core.errors import InvalidInputError, UnavailableError
from peregrine.state.cache import TieredCache, embedding_key
from peregrine.state.crdt import SharedDoc, UpdateLog
from peregrine.state.docs import DocHub
from peregrine.state.ids import StoredIds, load_secret
from peregrine.state.ledger import Ledger
from peregrine.state.local import LocalStore
from peregrine.state.metrics import StateMetrics
from peregrine.state.profiles import KINDS, Profiles
from peregrine.state.semantic import SemanticCache, SemanticHit
from peregrine.state.sessions import MAX_READ, SessionStore, node_id
from peregrine.state.settings import StateSettings
from peregrine.state.shared import RedisTier
from peregrine.state.turns import Turn
from peregrine.vector.service import VectorService

__all__ = ["MAX_READ", "Ledger", "SemanticCache", "SemanticHit", "SharedDoc", "StateService",
           "StateSettings", "TieredCache", "Turn", "UpdateLog", "embedding_key",
           "estimate_tokens"]


def estimate_tokens(text: str) -> int:
    """About four bytes of UTF-8 per token, as for most BPE vocabularies on English;
    pass a model's own tokenizer to ``turns_within`` where it matters."""
    return max(1, len(text.encode()) // 4)

DEFAULT_TENANT = "default"
MAX_DOC_CHANGE = 64 * 1024
_DOC_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class StateService:
    def __init__(self, settings: StateSettings, sessions: SessionStore, secret: bytes,
                 profiles: Profiles, docs: DocHub, metrics: StateMetrics | None = None,
                 ledger_path: Path | None = None) -> None:
        self.settings = settings
        self._sessions = sessions
        self._ids = StoredIds(secret)
        counter = metrics.cache if metrics else None
        #: Vectors by ``embedding_key(model, text)``: float32 bytes.
        self.embeddings = TieredCache("emb", settings.embedding_cache_entries,
                                      settings.embedding_cache_mb << 20,
                                      settings.embedding_cache_ttl_s, sessions.redis, counter)
        #: Application results by key (use ``get_result``/``put_result`` for per-tenant,
        #: HMAC-keyed entries).
        self.results = TieredCache("result", settings.result_cache_entries,
                                   settings.result_cache_mb << 20, settings.result_cache_ttl_s,
                                   sessions.redis, counter,
                                   max_value_bytes=settings.result_max_bytes)
        self._profiles = profiles
        self._docs = docs
        self._ledger_path = ledger_path
        self._ledger: Ledger | None = None
        self._semantic: SemanticCache | None = None
        self._semantic_factory: Callable[[], SemanticCache] | None = None
        self._counter = counter
        self._semantic_lock = threading.Lock()

    @classmethod
    def open(cls, settings: StateSettings, data: str | Path,
             registry: CollectorRegistry | None = None) -> StateService:
        root = Path(data)
        shared = None
        origin = node_id()
        if settings.redis:
            shared = RedisTier(settings.redis, settings.redis_timeout_s,
                               settings.session_ttl_s, settings.max_turns, origin)
        secret = load_secret(settings.secret, root,
                             shared.agree_secret if shared is not None else None)
        local = LocalStore(root / "state" / "local.sqlite3",
                           durable=settings.durability == "durable",
                           ttl_s=settings.session_ttl_s, max_turns=settings.max_turns,
                           origin=origin)
        metrics = StateMetrics(registry) if registry is not None else None
        try:
            sessions = SessionStore(settings, local, shared, metrics)
        except BaseException:
            local.close()
            raise
        profiles = Profiles(root / "state" / "profiles.sqlite3", shared)
        docs = DocHub(root / "state" / "docs.sqlite3", settings.docs_hub or None, origin,
                      settings.max_docs)
        return cls(settings, sessions, secret, profiles, docs, metrics,
                   root / "state" / "ledger.sqlite3")

    def _sid(self, tenant: str, session_id: str) -> str:
        return self._ids(tenant, "session", session_id)

    def append_turn(self, session_id: str, role: str, content: str,
                    tenant: str = DEFAULT_TENANT) -> Turn:
        """Append a turn; with the durable policy it survives power loss once this
        returns. Visible to the next read on this node at once."""
        return self._sessions.append(self._sid(tenant, session_id), role, content)

    def last_turns(self, session_id: str, n: int = 20,
                   tenant: str = DEFAULT_TENANT) -> list[Turn]:
        """The last ``n`` turns, oldest first (empty for an unknown session)."""
        return self._sessions.last(self._sid(tenant, session_id), n)

    def turns_within(self, session_id: str, budget_tokens: int,
                     count: Callable[[str], int] = estimate_tokens,
                     tenant: str = DEFAULT_TENANT) -> list[Turn]:
        """The most recent turns whose contents fit ``budget_tokens`` together,
        oldest first (what fits a prompt window)."""
        if not 0 <= budget_tokens <= 10_000_000:
            raise InvalidInputError("budget_tokens must be 0..10000000")
        out: list[Turn] = []
        used = 0
        for turn in reversed(self.last_turns(session_id, MAX_READ, tenant)):
            used += count(turn.content)
            if used > budget_tokens:
                break
            out.append(turn)
        return out[::-1]

    def _profile_key(self, kind: str, ident: str, tenant: str) -> str:
        if kind not in KINDS:
            raise InvalidInputError(f"kind must be one of {KINDS}")
        return f"{kind}:{self._ids(tenant, kind, ident)}"

    def get_settings(self, kind: str, ident: str, tenant: str = DEFAULT_TENANT
                     ) -> dict[str, Any]:
        """Durable settings of a user or device (``kind`` "user" or "device")."""
        return self._profiles.get(self._profile_key(kind, ident, tenant))

    def update_settings(self, kind: str, ident: str, changes: dict[str, Any],
                        tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
        """Merge ``changes`` into them (``None`` removes a setting); fsynced locally."""
        return self._profiles.update(self._profile_key(kind, ident, tenant), changes)

    # -- caches ----------------------------------------------------------------------
    def get_result(self, key: str, tenant: str = DEFAULT_TENANT) -> bytes | None:
        """A cached result of this tenant (keys are printable ASCII, stored as HMACs)."""
        return self.results.get(self._ids(tenant, "result", key))

    def put_result(self, key: str, value: bytes, ttl_s: float | None = None,
                   tenant: str = DEFAULT_TENANT) -> None:
        """Keep ``value`` for ``ttl_s`` (at most ``[state] result_cache_ttl_s``)."""
        self.results.put(self._ids(tenant, "result", key), value, ttl_s)

    def delete_result(self, key: str, tenant: str = DEFAULT_TENANT) -> bool:
        return self.results.delete(self._ids(tenant, "result", key))

    def attach_semantic(self, vector: VectorService, encoder: Callable[[], Any]) -> None:
        """Serve the semantic response cache from ``vector`` (a collection of its own),
        embedding prompts with ``encoder()``; both are touched only on first use."""
        settings, counter = self.settings, self._counter

        def build() -> SemanticCache:
            return SemanticCache(vector, encoder(), threshold=settings.semantic_threshold,
                                 ttl_s=settings.semantic_ttl_s,
                                 max_entries=settings.semantic_max_entries,
                                 counter=counter)

        self._semantic_factory = build

    @property
    def semantic(self) -> SemanticCache:
        """The semantic response cache (``attach_semantic`` first)."""
        with self._semantic_lock:
            if self._semantic is None:
                if self._semantic_factory is None:
                    raise UnavailableError("the semantic cache needs the vector store and an "
                                           "embedder (attach_semantic)")
                self._semantic = self._semantic_factory()
            return self._semantic

    def semantic_lookup(self, prompt: str, tenant: str = DEFAULT_TENANT) -> SemanticHit | None:
        """The cached answer of a prompt close enough to ``prompt``, if any."""
        return self.semantic.get(prompt, self._ids(tenant, "tenant", tenant))

    def semantic_store(self, prompt: str, answer: str, tenant: str = DEFAULT_TENANT) -> None:
        self.semantic.put(prompt, answer, self._ids(tenant, "tenant", tenant))

    def cache_stats(self) -> dict[str, Any]:
        out = {"embeddings": self.embeddings.stats(), "results": self.results.stats()}
        if self._semantic is not None:
            out["semantic"] = {"hits": self._semantic.hits, "misses": self._semantic.misses,
                               "threshold": self._semantic.threshold}
        return out

    # -- projections: idempotent sums ---------------------------------------------------
    @property
    def ledger(self) -> Ledger:
        """Sums by key applied once per event sequence (``Ledger``), for projections
        of event streams; opened on first use."""
        if self._ledger is None:
            if self._ledger_path is None:
                raise UnavailableError("the ledger needs StateService.open")
            self._ledger = Ledger(self._ledger_path)
        return self._ledger

    # -- shared documents (CRDT) ---------------------------------------------------------
    def attach_docs_hub(self, nats_url: str) -> None:
        """Sync shared documents through the NATS at ``nats_url`` unless ``[state]
        docs_hub`` names another (before the first document is used)."""
        if self._docs.nats_url is None:
            self._docs.nats_url = nats_url

    def _doc(self, name: str, tenant: str) -> str:
        if not isinstance(name, str) or not _DOC_NAME.match(name):
            raise InvalidInputError("a document name is 1-64 of A-Z a-z 0-9 _ - .")
        return self._ids(tenant, "doc", name)

    def read_doc(self, name: str, tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
        """The ``data`` map of a shared document (empty when new)."""
        return self._docs.read(self._doc(name, tenant))

    def update_doc(self, name: str, changes: dict[str, Any], tenant: str = DEFAULT_TENANT
                   ) -> dict[str, Any]:
        """Merge ``changes`` into its ``data`` map (``None`` removes a key): durable on
        this node when it returns, and on its way to every other node."""
        try:
            size = len(orjson.dumps(changes))
        except TypeError as exc:  # orjson.JSONEncodeError: too deep, not JSON
            raise InvalidInputError(f"the change is not storable JSON: {exc}") from None
        if size > MAX_DOC_CHANGE:
            raise InvalidInputError(f"one change is at most {MAX_DOC_CHANGE} bytes of JSON")
        return self._docs.update(self._doc(name, tenant), changes)

    def doc_diff(self, name: str, state_vector: bytes | None = None,
                 tenant: str = DEFAULT_TENANT) -> bytes:
        """The Yjs update a replica at ``state_vector`` lacks (all of it when None)."""
        return self._docs.diff(self._doc(name, tenant), state_vector)

    def apply_doc_update(self, name: str, update: bytes, tenant: str = DEFAULT_TENANT) -> None:
        """Apply a Yjs client's update as this node's own edit."""
        self._docs.apply(self._doc(name, tenant), update)

    def delete_session(self, session_id: str, tenant: str = DEFAULT_TENANT) -> bool:
        return self._sessions.delete(self._sid(tenant, session_id))

    def sync(self) -> int:
        """Replay to Redis what it missed (the syncer thread does this by itself)."""
        return self._sessions.sync_once() if self._sessions.redis is not None else 0

    @property
    def redis_up(self) -> bool | None:
        shared = self._sessions.redis
        return None if shared is None else shared.up

    def stats(self) -> dict[str, Any]:
        return {"redis_up": self.redis_up, "pending": self._sessions.local.pending()}

    def close(self) -> None:
        try:
            self._sessions.close()
        finally:
            self._sessions.local.close()
            self._profiles.close()
            self._docs.close()
            if self._ledger is not None:
                self._ledger.close()
