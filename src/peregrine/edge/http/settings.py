"""Settings of the shared HTTP edge: the ``[http]`` section."""

from __future__ import annotations

import os
from dataclasses import dataclass

from peregrine.core.errors import InvalidInputError
from peregrine.core.settings import Section, field


@dataclass(frozen=True)
class HttpSettings(Section):
    host: str = field("127.0.0.1", "address to bind (0.0.0.0 for all interfaces)")
    port: int = field(6333, "TCP port (6333, as Qdrant)")
    tls_cert: str = field("", "PEM certificate: serve HTTPS")
    tls_key: str = field("", "PEM private key of tls_cert")
    api_key: str = field("", "key for every route but health probes (api-key or Bearer)")
    read_only_api_key: str = field("", "key that can read but not write")
    max_body_bytes: int = field(32 << 20, "largest body of a bulk write (an upsert)")
    max_query_body_bytes: int = field(4 << 20, "largest body of any other request")
    request_timeout_s: float = field(30.0, "longest a request may take (its ?timeout caps lower)")
    header_timeout_s: float = field(10.0, "a connection must send a request's headers within this")
    body_timeout_s: float = field(30.0, "longest pause while a request body arrives")
    keep_alive_s: int = field(75, "idle keep-alive connections are closed after this")
    max_connections: int = field(0, "open connections at most; 0 = from the file limit")
    workers: int = field(0, "engine threads; 0 = 4 x CPU cores")
    inline_reads: bool = field(True, "a cheap read with no engine work in flight skips the pool")
    access_log: bool = field(True, "one log line per request")
    tracing: bool = field(False, "OpenTelemetry spans (also on when OTEL_TRACES_EXPORTER is set)")

    def validate(self) -> HttpSettings:
        if not 0 <= self.port <= 65535:
            raise InvalidInputError("http.port must be between 0 and 65535")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise InvalidInputError("TLS needs both http.tls_cert and http.tls_key")
        if self.api_key and self.api_key == self.read_only_api_key:
            raise InvalidInputError("http.api_key and http.read_only_api_key must differ")
        for name in ("max_body_bytes", "max_query_body_bytes", "request_timeout_s",
                     "header_timeout_s", "body_timeout_s", "keep_alive_s"):
            if getattr(self, name) <= 0:
                raise InvalidInputError(f"http.{name} must be positive")
        if self.max_connections < 0 or self.workers < 0:
            raise InvalidInputError("http.max_connections and http.workers must be >= 0")
        return self

    def engine_threads(self) -> int:
        return self.workers if self.workers > 0 else 4 * (os.cpu_count() or 1)

    def connection_limit(self) -> int:
        """``max_connections``, or what the open-file limit leaves room for."""
        if self.max_connections:
            return self.max_connections
        try:
            import resource

            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        except (ImportError, ValueError, OSError):
            return 1024
        if soft == resource.RLIM_INFINITY:
            return 4096
        # Room for the store's files (segments, WAL), logs and the listener.
        return max(16, min(4096, int(soft) - 128))
