"""The message-queue face: request/reply services on NATS (front door: ``service``)."""

from peregrine.mq.service import (
    CircuitBreaker,
    CircuitOpenError,
    MqSettings,
    Service,
    ServiceError,
    run_service,
)

__all__ = ["CircuitBreaker", "CircuitOpenError", "MqSettings", "Service", "ServiceError",
           "run_service"]
