"""Handler latency as HDR histograms (HdrHistogram_py), and their Prometheus view.

Each endpoint records its handler's time in microseconds (1 µs to 60 s, three
significant digits). Prometheus sees a summary per endpoint (p50, p90, p99,
p99.9, p99.99, with count and sum); ``spectrum()`` gives the whole percentile
distribution, as HdrHistogram prints it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram
from prometheus_client.core import CounterMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

QUANTILES = (50.0, 90.0, 99.0, 99.9, 99.99)


class LatencyHistogram:
    """An HDR histogram fed in bulk: ``record`` only appends the value (the hot
    path of every request); every 4096 values, and before any read, they are folded
    in as (distinct value, count) pairs, a few dozen ``record_value`` calls instead
    of thousands."""

    _FOLD = 4096

    def __init__(self) -> None:
        self._h = HdrHistogram(1, 60_000_000, 3)
        self._lock = threading.Lock()  # record (the loop) vs a read (a scrape thread)
        self._raw: list[int] = []
        self.total_us = 0.0

    def record(self, micros: float) -> None:
        with self._lock:
            self._raw.append(int(micros))
            self.total_us += micros
            if len(self._raw) >= self._FOLD:
                self._fold()

    def _fold(self) -> None:
        raw, self._raw = self._raw, []
        if raw:
            values, counts = np.unique(np.clip(np.asarray(raw, dtype=np.int64), 1,
                                               60_000_000), return_counts=True)
            for value, count in zip(values.tolist(), counts.tolist(), strict=True):
                self._h.record_value(value, count)

    @property
    def _hist(self) -> HdrHistogram:
        with self._lock:
            self._fold()
        return self._h

    @property
    def count(self) -> int:
        return int(self._hist.get_total_count())

    def percentile(self, p: float) -> int:
        return int(self._hist.get_value_at_percentile(p))

    def summary(self) -> dict[str, Any]:
        h = self._hist
        return {"count": self.count, "mean_us": float(h.get_mean_value()),
                "max_us": int(h.get_max_value()),
                **{f"p{q:g}_us": self.percentile(q) for q in QUANTILES}}

    def spectrum(self, ticks_per_half: int = 5) -> list[tuple[float, int]]:
        """(percentile, µs) pairs over the whole distribution (HdrHistogram's
        percentile iteration)."""
        return [(float(item.percentile_level_iterated_to), int(item.value_iterated_to))
                for item in self._hist.get_percentile_iterator(ticks_per_half)]


class HdrCollector(Collector):
    """Every endpoint's histogram as a Prometheus summary in seconds, and its
    request count (read from the worker's own counts at scrape time, so a request
    costs no Prometheus counter update)."""

    def __init__(self, histograms: dict[str, LatencyHistogram], service: str,
                 requests: Callable[[], dict[str, int]]) -> None:
        self.histograms, self.service, self.requests = histograms, service, requests

    def collect(self) -> Iterator[SummaryMetricFamily | CounterMetricFamily]:
        counted = CounterMetricFamily("peregrine_mq_requests", "Requests handled",
                                      labels=["service", "endpoint"])
        for name, n in self.requests().items():
            counted.add_metric([self.service, name], n)
        yield counted
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
