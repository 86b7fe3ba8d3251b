"""Settings of the message-queue face: the ``[mq]`` section (``peregrine mq``)."""

from __future__ import annotations

from dataclasses import dataclass

from peregrine.core.errors import InvalidInputError
from peregrine.core.settings import Section, field


@dataclass(frozen=True)
class MqSettings(Section):
    nats: str = field("nats://127.0.0.1:4222", "NATS URL(s), comma separated "
                                               "(user:password@host in the URL works too)")
    tls_ca: str = field("", "CA file that signs the NATS server's certificate (TLS)")
    tls_cert: str = field("", "client certificate for TLS to NATS (mutual TLS)")
    tls_key: str = field("", "the client certificate's key")
    creds: str = field("", "NATS credentials file (JWT + NKey seed)")
    nkey_seed: str = field("", "file holding an NKey seed")
    token: str = field("", "NATS authentication token")
    user: str = field("", "NATS user (with password)")
    password: str = field("", "NATS password")
    drain_s: float = field(10.0, "on SIGTERM: longest wait for requests in flight and "
                                 "unacknowledged events before the worker exits")
    pending_msgs: int = field(65536, "messages a subscription may hold unhandled; beyond, "
                                     "new ones are dropped and counted (back-pressure)")
    pending_mb: int = field(64, "bytes (MiB) a subscription may hold unhandled")
    max_inflight: int = field(1024, "async handler calls running at once per endpoint")
    dedup_entries: int = field(10000, "request ids remembered for duplicate requests "
                                      "(0: off)")
    dedup_ttl_s: float = field(60.0, "how long a request id's reply is remembered")
    metrics_port: int = field(0, "serve Prometheus metrics on this port (0: off)")

    def validate(self) -> MqSettings:
        if self.drain_s <= 0 or self.dedup_ttl_s <= 0:
            raise InvalidInputError("mq.drain_s and mq.dedup_ttl_s must be positive")
        for name in ("pending_msgs", "pending_mb", "max_inflight"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"mq.{name} must be positive")
        if (self.user == "") != (self.password == ""):
            raise InvalidInputError("mq.user and mq.password go together")
        if (self.tls_cert == "") != (self.tls_key == ""):
            raise InvalidInputError("mq.tls_cert and mq.tls_key go together")
        return self
