"""Handler latency as HDR histograms (HdrHistogram_py), and their Prometheus view.

Each endpoint records its handler's time in microseconds (1 µs to 60 s, three
significant digits). Prometheus sees a summary per endpoint (p50, p90, p99,
p99.9, p99.99, with count and sum); ``spectrum()`` gives the whole percentile
distribution, as HdrHistogram prints it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from hdrh.histogram import HdrHistogram
from prometheus_client.core import SummaryMetricFamily
from prometheus_client.registry import Collector

QUANTILES = (50.0, 90.0, 99.0, 99.9, 99.99)


class LatencyHistogram:
    def __init__(self) -> None:
        self._h = HdrHistogram(1, 60_000_000, 3)
        self._lock = threading.Lock()
        self.total_us = 0.0

    def record(self, micros: float) -> None:
        value = int(micros) or 1
        self._h.record_value(value if value < 60_000_000 else 60_000_000)
        self.total_us += micros

    @property
    def count(self) -> int:
        return int(self._h.get_total_count())

    def percentile(self, p: float) -> int:
        return int(self._h.get_value_at_percentile(p))

    def summary(self) -> dict[str, Any]:
        h = self._h
        return {"count": self.count, "mean_us": float(h.get_mean_value()),
                "max_us": int(h.get_max_value()),
                **{f"p{q:g}_us": self.percentile(q) for q in QUANTILES}}

    def spectrum(self, ticks_per_half: int = 5) -> list[tuple[float, int]]:
        """(percentile, µs) pairs over the whole distribution (HdrHistogram's
        percentile iteration)."""
        return [(float(item.percentile_level_iterated_to), int(item.value_iterated_to))
                for item in self._h.get_percentile_iterator(ticks_per_half)]


class HdrCollector(Collector):
    """Every endpoint's histogram as a Prometheus summary in seconds."""

    def __init__(self, histograms: dict[str, LatencyHistogram], service: str) -> None:
        self.histograms, self.service = histograms, service

    def collect(self) -> Iterator[SummaryMetricFamily]:
        family = SummaryMetricFamily(
            "peregrine_mq_handler_seconds", "Handler time per endpoint (HDR histogram; "
            "quantiles from it)", labels=["service", "endpoint", "quantile"])
        plain = SummaryMetricFamily("peregrine_mq_handler_seconds_all", "Handler time "
                                    "per endpoint: count and sum", labels=["service",
                                                                          "endpoint"])
        for name, h in self.histograms.items():
            for q in QUANTILES:
                family.add_sample("peregrine_mq_handler_seconds",
                                  {"service": self.service, "endpoint": name,
                                   "quantile": str(q / 100)}, h.percentile(q) / 1e6)
            plain.add_metric([self.service, name], h.count, h.total_us / 1e6)
        yield family
        yield plain
