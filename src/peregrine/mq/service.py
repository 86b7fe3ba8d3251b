"""The message-queue face's front door: request/reply services on NATS.

Declare a ``Service`` and bind handlers to subjects::

    service = Service("order-validator", "1.0.0")

    @service.endpoint("orders.in", queue_group="order-validator")
    def validate(data: memoryview) -> bytes:
        ...

A handler gets the request's bytes as a ``memoryview`` (no copy) and returns the
reply's bytes; ``async def`` handlers work too. Raising ``ServiceError(code,
message)`` answers with the ``Nats-Service-Error`` headers of the NATS services
protocol, which ``$SRV.PING``/``INFO``/``STATS`` also speak, so ``nats micro``
tooling sees the service. ``run_service`` (``peregrine mq module:service``)
runs it until SIGTERM, then drains.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

from peregrine.core.errors import InvalidInputError
from peregrine.mq.breaker import CircuitBreaker, CircuitOpenError
from peregrine.mq.declare import Endpoint, Service, ServiceError
from peregrine.mq.settings import MqSettings
from peregrine.mq.worker import Worker

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["CircuitBreaker", "CircuitOpenError", "Endpoint", "MqSettings", "Service",
           "ServiceError", "Worker", "load_service", "run_service"]

log = logging.getLogger("peregrine.mq")


def load_service(spec: str) -> Service:
    """``module:attribute`` naming a ``Service``."""
    import importlib

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InvalidInputError(f"{spec!r} is not module:attribute")
    if "" not in sys.path and os.getcwd() not in sys.path:  # run from a project's root
        sys.path.insert(0, os.getcwd())
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidInputError(f"cannot load {spec!r}: {exc}") from None
    if not isinstance(found, Service):
        raise InvalidInputError(f"{spec!r} is a {type(found).__name__}, not a Service")
    return found


def run_service(service: Service, settings: MqSettings,
                registry: CollectorRegistry | None = None, data_dir: str = "./data") -> int:
    """Serve until SIGTERM or SIGINT, then drain; 0 when everything in flight was
    answered and acknowledged within ``drain_s``."""
    async def main() -> int:
        worker = Worker(service, settings, registry, data_dir)
        await worker.start()
        log.info("serving", extra={"fields": {
            "service": service.name, "version": service.version, "id": worker.id,
            "endpoints": [e.subject for e in service.endpoints]}})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        clean = await worker.drain()
        log.info("drained", extra={"fields": {"clean": clean}})
        return 0 if clean else 1

    return asyncio.run(main())
