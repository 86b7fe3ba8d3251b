"""Settings of the state face: the ``[state]`` section."""

from __future__ import annotations

from dataclasses import dataclass

from peregrine.core.errors import InvalidInputError
from peregrine.core.settings import Section, field


@dataclass(frozen=True)
class StateSettings(Section):
    redis: str = field("", "Redis URL of the shared tier (redis://host:port/db); empty: "
                           "in-process and local durable tiers only")
    durability: str = field("durable", "durable: a turn is fsynced to the local store "
                                       "before its append returns (survives power loss); "
                                       "relaxed: it survives a crash of the process only")
    write_mode: str = field("through", "through: an append writes Redis before it returns "
                                       "(other nodes read it at once); behind: Redis is "
                                       "written in batches every ~20 ms after it returns")
    session_ttl_s: float = field(7 * 24 * 3600.0, "a session expires this long after its "
                                                  "last write or read (sliding)")
    l1_sessions: int = field(10_000, "sessions kept in process memory (LRU)")
    max_turn_bytes: int = field(256 * 1024, "largest turn content, in bytes (UTF-8)")
    max_turns: int = field(10_000, "turns kept per session (the oldest go first)")
    redis_timeout_s: float = field(0.25, "a Redis call slower than this counts as Redis "
                                         "down: the tiers below answer meanwhile")
    retry_s: float = field(1.0, "how often a down Redis is tried again")
    secret: str = field("", "HMAC-SHA256 key for stored identifiers; empty: one generated "
                            "once and kept in <data>/state/secret")
    embedding_cache_entries: int = field(100_000, "embedding cache: vectors kept in memory")
    embedding_cache_mb: int = field(256, "embedding cache: memory bound, MiB")
    embedding_cache_ttl_s: float = field(7 * 24 * 3600.0, "embedding cache: entry lifetime")
    result_cache_entries: int = field(100_000, "result cache: entries kept in memory")
    result_cache_mb: int = field(256, "result cache: memory bound, MiB")
    result_cache_ttl_s: float = field(3600.0, "result cache: default and longest lifetime "
                                              "of an entry")
    result_max_bytes: int = field(1 << 20, "result cache: largest value, in bytes")
    semantic_threshold: float = field(0.92, "semantic cache: least cosine similarity of a "
                                            "prompt to a cached one for a hit")
    semantic_ttl_s: float = field(24 * 3600.0, "semantic cache: entry lifetime")
    docs_hub: str = field("", "NATS URL of the shared-document hub; empty: the server's "
                              "own NATS (peregrine serve), none for the Python API alone")
    max_docs: int = field(1000, "shared documents open at once (the least recently used "
                                "close; they reopen from the local log)")
    semantic_max_entries: int = field(100_000, "semantic cache: most prompts kept (past "
                                               "it the soonest to expire go)")

    def validate(self) -> StateSettings:
        if self.durability not in ("durable", "relaxed"):
            raise InvalidInputError("state.durability must be durable or relaxed")
        if self.write_mode not in ("through", "behind"):
            raise InvalidInputError("state.write_mode must be through or behind")
        if self.session_ttl_s <= 0 or self.redis_timeout_s <= 0 or self.retry_s <= 0:
            raise InvalidInputError("state.session_ttl_s, redis_timeout_s and retry_s "
                                    "must be positive")
        if not 0 < self.semantic_threshold <= 1:
            raise InvalidInputError("state.semantic_threshold must be in (0, 1]")
        for name in ("embedding_cache_ttl_s", "result_cache_ttl_s", "semantic_ttl_s"):
            if not getattr(self, name) > 0:
                raise InvalidInputError(f"state.{name} must be positive")
        for name in ("l1_sessions", "max_turn_bytes", "max_turns", "embedding_cache_entries",
                     "embedding_cache_mb", "result_cache_entries", "result_cache_mb",
                     "result_max_bytes", "semantic_max_entries", "max_docs"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"state.{name} must be positive")
        if self.redis and not self.redis.startswith(("redis://", "rediss://", "unix://")):
            raise InvalidInputError("state.redis must be a redis://, rediss:// or unix:// URL")
        return self
