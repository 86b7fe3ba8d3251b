"""Prometheus plumbing every face shares: one registry per process, common buckets.

Each face contributes its own collectors (read at scrape time, so hot paths
pay nothing for gauges) to the registry the composition root creates; the
HTTP edge adds request counters and serves ``/metrics`` from it. A registry
per process rather than the global default keeps several servers in one test
process apart.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

# 50 us .. 10 s: the interesting part of a low-latency server is below 1 ms.
LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005,
                   0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


def new_registry() -> CollectorRegistry:
    """A registry with the process, platform and garbage-collector metrics."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)  # includes resident memory
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
