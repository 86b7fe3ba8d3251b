"""The vector face's Prometheus metrics.

Collection gauges are read from the engine at scrape time rather than kept up
to date on every write, so the write path pays nothing for them; search
latency is a histogram the front door feeds (engine time only, cache hits
excluded).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from peregrine.core.metrics import LATENCY_BUCKETS
from peregrine.vector.result_cache import CacheStats
from peregrine.vector.types import CollectionInfo


class _StoreCollector(Collector):
    def __init__(self, infos: Callable[[], list[CollectionInfo]],
                 cache: Callable[[], CacheStats]) -> None:
        self._infos = infos
        self._cache = cache

    def collect(self) -> Iterator[Any]:
        labels = ["collection"]
        points = GaugeMetricFamily("peregrine_collection_points", "Points stored", labels=labels)
        indexed = GaugeMetricFamily("peregrine_collection_indexed_points",
                                    "Points in an HNSW index", labels=labels)
        segments = GaugeMetricFamily("peregrine_collection_segments", "Segments", labels=labels)
        backlog = GaugeMetricFamily("peregrine_collection_index_backlog_segments",
                                    "Full segments waiting for their HNSW build", labels=labels)
        unindexed = GaugeMetricFamily("peregrine_collection_unindexed_points",
                                      "Points not yet in an HNSW index", labels=labels)
        wal = GaugeMetricFamily("peregrine_collection_wal_bytes", "WAL size on disk",
                                labels=labels)
        infos = self._infos()
        for info in infos:
            points.add_metric([info.name], info.points)
            indexed.add_metric([info.name], info.indexed_points)
            segments.add_metric([info.name], info.segments)
            backlog.add_metric([info.name], info.index_backlog_segments)
            unindexed.add_metric([info.name], info.unindexed_points)
            wal.add_metric([info.name], info.wal_bytes)
        yield from (points, indexed, segments, backlog, unindexed, wal)
        yield from _qdrant_names(infos)
        stats = self._cache()
        yield CounterMetricFamily("peregrine_result_cache_hits", "Result cache hits",
                                  value=stats.hits)
        yield CounterMetricFamily("peregrine_result_cache_misses", "Result cache misses",
                                  value=stats.misses)
        yield GaugeMetricFamily("peregrine_result_cache_hit_ratio",
                                "Hits / lookups since start", value=stats.hit_ratio)
        yield GaugeMetricFamily("peregrine_result_cache_entries", "Cached results",
                                value=stats.entries)
        yield GaugeMetricFamily("peregrine_result_cache_bytes", "Bytes held by the cache",
                                value=stats.bytes)


def _qdrant_names(infos: list[CollectionInfo]) -> Iterator[Any]:
    """Collection gauges under Qdrant's own names, for its dashboards (those whose
    meaning carries over exactly)."""
    yield GaugeMetricFamily("collections_total", "Number of collections", value=len(infos))
    points = GaugeMetricFamily("collection_points", "Approximate amount of points per "
                               "collection", labels=["id"])
    for info in infos:
        points.add_metric([info.name], info.points)
    yield points


class VectorMetrics:
    """Registered once per process registry; the service reports into it."""

    def __init__(self, registry: CollectorRegistry, infos: Callable[[], list[CollectionInfo]],
                 cache: Callable[[], CacheStats]) -> None:
        registry.register(_StoreCollector(infos, cache))
        self._search = Histogram("peregrine_search_duration_seconds",
                                 "Engine time of searches (cache hits excluded)",
                                 ["collection", "operation"], buckets=LATENCY_BUCKETS,
                                 registry=registry)
        self._children: dict[tuple[str, str], Any] = {}

    def observe_search(self, collection: str, operation: str, seconds: float) -> None:
        key = (collection, operation)
        child = self._children.get(key)
        if child is None:  # labels() costs a lock and a dict walk: memoise it
            child = self._children[key] = self._search.labels(collection, operation)
        child.observe(seconds)

    def forget_collection(self, collection: str) -> None:
        """Drop a deleted collection's series (a new one starts from zero)."""
        for key in [k for k in self._children if k[0] == collection]:
            del self._children[key]
            self._search.remove(*key)
