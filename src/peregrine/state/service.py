"""The state face's front door: sessions for LLM applications.

``StateService.open(settings, data)`` opens the tiers under ``<data>/state``:
memory, the local durable store (SQLite, WAL) and, with ``[state] redis``, the
shared Redis tier. Identifiers are stored as HMAC-SHA256 of (tenant, id) with
the node's secret, so raw session and user ids never reach a store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from peregrine.core.errors import InvalidInputError
from peregrine.state.cache import TieredCache, embedding_key
from peregrine.state.crdt import SharedDoc, UpdateLog
from peregrine.state.ids import check_id, load_secret, stored_id
from peregrine.state.local import LocalStore
from peregrine.state.metrics import StateMetrics
from peregrine.state.profiles import KINDS, Profiles
from peregrine.state.semantic import SemanticCache, SemanticHit
from peregrine.state.sessions import MAX_READ, SessionStore, node_id
from peregrine.state.settings import StateSettings
from peregrine.state.shared import RedisTier
from peregrine.state.turns import Turn

__all__ = ["MAX_READ", "SemanticCache", "SemanticHit", "SharedDoc", "StateService",
           "StateSettings", "TieredCache", "Turn", "UpdateLog", "embedding_key",
           "estimate_tokens"]


def estimate_tokens(text: str) -> int:
    """About four bytes of UTF-8 per token, as for most BPE vocabularies on English;
    pass a model's own tokenizer to ``turns_within`` where it matters."""
    return max(1, len(text.encode()) // 4)

DEFAULT_TENANT = "default"


class StateService:
    def __init__(self, settings: StateSettings, sessions: SessionStore, secret: bytes,
                 profiles: Profiles, metrics: StateMetrics | None = None) -> None:
        self.settings = settings
        self._sessions = sessions
        self._secret = secret
        #: Vectors by ``embedding_key(model, text)``: float32 bytes.
        self.embeddings = TieredCache("emb", 100_000, 256 << 20, settings.session_ttl_s,
                                      sessions.redis, metrics.cache if metrics else None)
        self._profiles = profiles

    @classmethod
    def open(cls, settings: StateSettings, data: str | Path,
             registry: CollectorRegistry | None = None) -> StateService:
        root = Path(data)
        shared = None
        if settings.redis:
            shared = RedisTier(settings.redis, settings.redis_timeout_s,
                               settings.session_ttl_s, settings.max_turns, node_id())
        secret = load_secret(settings.secret, root,
                             shared.agree_secret if shared is not None else None)
        local = LocalStore(root / "state" / "local.sqlite3",
                           durable=settings.durability == "durable",
                           ttl_s=settings.session_ttl_s, max_turns=settings.max_turns)
        metrics = StateMetrics(registry) if registry is not None else None
        try:
            sessions = SessionStore(settings, local, shared, metrics)
        except BaseException:
            local.close()
            raise
        profiles = Profiles(root / "state" / "profiles.sqlite3", shared)
        return cls(settings, sessions, secret, profiles, metrics)

    def _sid(self, tenant: str, session_id: str) -> str:
        check_id("tenant", tenant)
        return stored_id(self._secret, tenant, "session", check_id("session id", session_id))

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
        check_id("tenant", tenant)
        return f"{kind}:{stored_id(self._secret, tenant, kind, check_id(kind + ' id', ident))}"

    def get_settings(self, kind: str, ident: str, tenant: str = DEFAULT_TENANT
                     ) -> dict[str, Any]:
        """Durable settings of a user or device (``kind`` "user" or "device")."""
        return self._profiles.get(self._profile_key(kind, ident, tenant))

    def update_settings(self, kind: str, ident: str, changes: dict[str, Any],
                        tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
        """Merge ``changes`` into them (``None`` removes a setting); fsynced locally."""
        return self._profiles.update(self._profile_key(kind, ident, tenant), changes)

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
