"""Settings of the vector store face: the ``[vector]`` section."""

from __future__ import annotations

from dataclasses import dataclass

from peregrine.core.errors import InvalidInputError
from peregrine.core.settings import Section, field
from peregrine.vector.collection.search import MAX_EF
from peregrine.vector.segment.filters import FilterLimits


@dataclass(frozen=True)
class VectorSettings(Section):
    fsync: str = field("group", "WAL fsync: always | group (every 50 ms) | never")
    snapshots: str = field("", "snapshot directory (default <data>/snapshots)")
    snapshot_url_hosts: tuple[str, ...] = field(
        (), "hosts (host or host:port) snapshots may be recovered from over http(s); "
        "empty allows any")
    max_snapshot_bytes: int = field(16 << 30, "largest snapshot accepted for recovery")
    # Every size a request controls has a cap (400 beyond it).
    max_batch: int = field(10_000, "most points, ids or searches in one request")
    max_limit: int = field(10_000, "largest limit + offset of one search or page")
    max_ef: int = field(4096, "largest HNSW search beam (hnsw_ef) a request may ask for")
    max_filter_depth: int = field(32, "deepest nesting of filter objects")
    max_filter_conditions: int = field(1024, "most conditions in one filter")
    max_filter_values: int = field(10_000, "most ids and values listed in one filter")
    cache_entries: int = field(10_000, "result cache entries; 0 disables the cache")
    cache_bytes: int = field(64 << 20, "result cache size in bytes")

    def validate(self) -> VectorSettings:
        if self.fsync not in ("always", "group", "never"):
            raise InvalidInputError("vector.fsync must be 'always', 'group' or 'never'")
        for name in ("max_batch", "max_limit", "max_ef", "max_filter_depth",
                     "max_filter_conditions", "max_filter_values", "max_snapshot_bytes"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"vector.{name} must be positive")
        if self.max_ef > MAX_EF:
            raise InvalidInputError(f"vector.max_ef must be at most {MAX_EF}")
        if self.cache_entries < 0 or self.cache_bytes < 0:
            raise InvalidInputError("vector.cache_entries and cache_bytes must be >= 0")
        return self

    @property
    def filter_limits(self) -> FilterLimits:
        return FilterLimits(self.max_filter_depth, self.max_filter_conditions,
                            self.max_filter_values)
