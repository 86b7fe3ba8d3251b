"""Prometheus metrics of the state face."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class StateMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.reads = Counter("peregrine_state_session_reads", "Session reads by the tier "
                             "that answered (memory, redis, local)", ["tier"], registry=registry)
        self.redis_up = Gauge("peregrine_state_redis_up", "1 while the Redis tier is in use; "
                              "0 while degraded to the local tiers", registry=registry)
        self.pending = Gauge("peregrine_state_redis_pending", "Turns written while Redis was "
                             "down, not yet replayed to it", registry=registry)
        self.cache = Counter("peregrine_state_cache", "Cache lookups by cache and result "
                             "(memory, redis, miss)", ["cache", "result"], registry=registry)
        self.replayed = Counter("peregrine_state_redis_replayed", "Turns replayed to Redis "
                                "after it came back", registry=registry)
