"""Prometheus metrics of pipelines, one set per worker process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.registry = r
        self.events = Counter("peregrine_stream_events", "Events by pipeline and outcome "
                              "(in, done, dropped, retried, dead_lettered)",
                              ["pipeline", "outcome"], registry=r)
        self.stage_events = Counter("peregrine_stream_stage_events",
                                    "Events out of each stage, by result",
                                    ["pipeline", "stage", "result"], registry=r)
        self.stage_seconds = Histogram("peregrine_stream_stage_seconds",
                                       "Time one micro-batch spends in a stage",
                                       ["pipeline", "stage"], buckets=_LATENCY, registry=r)
        self.batch_size = Histogram("peregrine_stream_batch_size", "Events per micro-batch",
                                    ["pipeline"], buckets=_SIZES, registry=r)
        self.redeliveries = Counter("peregrine_stream_redeliveries",
                                    "Events received on a second or later delivery",
                                    ["pipeline"], registry=r)
        self.dead_letters = Counter("peregrine_stream_dead_letters",
                                    "Events sent to the dead-letter subject",
                                    ["pipeline", "stage"], registry=r)
        self.pending = Gauge("peregrine_stream_consumer_pending",
                             "Events in the stream not yet delivered to the consumer",
                             ["pipeline"], registry=r)
        self.ack_pending = Gauge("peregrine_stream_consumer_ack_pending",
                                 "Events delivered and not yet acknowledged", ["pipeline"],
                                 registry=r)
        self.embed_cache = Counter("peregrine_stream_embed_cache",
                                   "Texts of embed stages found in (hit) or added to (miss) "
                                   "the embedding cache", ["pipeline", "result"], registry=r)
        self.backfilling = Gauge("peregrine_stream_backfilling",
                                 "1 while a new version re-processes the stream (its aliases "
                                 "still name the previous version's collections)",
                                 ["pipeline"], registry=r)
        self.freshness = Histogram("peregrine_stream_freshness_seconds",
                                   "From publish (stream time) to visible in the vector store",
                                   ["pipeline"], buckets=_LATENCY, registry=r)
