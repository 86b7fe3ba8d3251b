"""A circuit breaker for the downstream calls a handler makes (the state face, a
vector search, another service).

Closed: calls go through; ``failure_threshold`` failures in a row open it.
Open: calls fail at once with ``CircuitOpenError`` (the handler answers an error
instead of waiting on a dead dependency) until ``reset_s`` has passed.
Half-open: one trial call goes through; success closes the breaker, failure
opens it again. The state is a Prometheus gauge (0 closed, 1 half-open, 2 open)
and every transition is counted.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

T = TypeVar("T")
STATES = {"closed": 0, "half_open": 1, "open": 2}


class CircuitOpenError(Exception):
    """The breaker is open: the downstream is not being called."""


class CircuitBreaker:
    def __init__(self, name: str, failure_threshold: int = 5, reset_s: float = 5.0,
                 registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self.failure_threshold, self.reset_s = name, failure_threshold, reset_s
        self.state = "closed"
        self.failures = 0
        self._opened_at = 0.0
        self._trial = False
        self._generation = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._gauge: Gauge | None = None
        self._transitions: Counter | None = None
        if registry is not None:
            self.attach(registry)

    def attach(self, registry: CollectorRegistry) -> None:
        gauge = Gauge("peregrine_mq_breaker_state", "Circuit breaker state (0 closed, "
                      "1 half-open, 2 open)", ["breaker"], registry=registry)
        self._transitions = Counter("peregrine_mq_breaker_transitions", "Breaker state "
                                    "changes", ["breaker", "to"], registry=registry)
        gauge.labels(self.name).set(STATES[self.state])
        self._gauge = gauge

    def _move(self, state: str) -> None:
        if state != self.state:
            self.state = state
            if self._gauge is not None and self._transitions is not None:
                self._gauge.labels(self.name).set(STATES[state])
                self._transitions.labels(self.name, state).inc()

    def _admit(self) -> int:
        """Let a call through (or raise); the generation it was admitted in."""
        with self._lock:
            if self.state == "open":
                if self._clock() - self._opened_at < self.reset_s:
                    raise CircuitOpenError(f"{self.name}: circuit open")
                self._move("half_open")
                self._trial = False
            if self.state == "half_open":
                if self._trial:
                    raise CircuitOpenError(f"{self.name}: circuit half-open, trial running")
                self._trial = True
            return self._generation

    def _done(self, ok: bool, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return  # admitted before the last change of state: its news is old
            if ok:
                self.failures = 0
                self._trial = False
                if self.state != "closed":
                    self._generation += 1
                self._move("closed")
                return
            self.failures += 1
            if self.state == "half_open" or self.failures >= self.failure_threshold:
                self._opened_at = self._clock()
                self._trial = False
                self._generation += 1
                self._move("open")

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        generation = self._admit()
        ok = False
        try:
            result = fn(*args)
            ok = True
            return result
        finally:  # a cancelled or interrupted call counts as a failure
            self._done(ok, generation)

    async def acall(self, fn: Callable[..., Awaitable[T]] | Callable[..., T], *args: Any) -> T:
        generation = self._admit()
        ok = False
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            ok = True
            return result  # type: ignore[return-value]
        finally:
            self._done(ok, generation)
