"""Everything a request handler may use, built once per server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from peregrine.api.observability import Metrics, Tracing
from peregrine.config import ServerConfig
from peregrine.vector.service import VectorService


@dataclass
class AppContext:
    config: ServerConfig
    service: VectorService
    executor: ThreadPoolExecutor
    metrics: Metrics
    tracing: Tracing | None = None
    ready: bool = False
    busy: int = 0  # engine calls in flight (touched only on the event loop)
    openapi: bytes = field(default=b"", repr=False)

    @classmethod
    def create(cls, config: ServerConfig, service: VectorService) -> AppContext:
        return cls(
            config=config,
            service=service,
            executor=ThreadPoolExecutor(config.engine_threads(), thread_name_prefix="engine"),
            metrics=Metrics(service),
            tracing=Tracing.from_env(config.tracing),
        )

    def close(self) -> None:
        """Wait for engine work in flight, then flush and close the store."""
        self.ready = False
        self.executor.shutdown(wait=True)
        self.service.close()
        if self.tracing is not None:
            self.tracing.shutdown()
