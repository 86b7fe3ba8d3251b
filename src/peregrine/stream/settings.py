"""Settings of the stream face: the ``[stream]`` section.

The bus is NATS with JetStream. ``peregrine serve`` starts its own server (files
under ``<data>/nats``) unless ``nats`` names an existing one; workers
(``peregrine worker``) connect to ``nats`` or, when it is empty, to the URL the
server recorded in its data directory.
"""

from __future__ import annotations

from dataclasses import dataclass

from peregrine.core.errors import InvalidInputError
from peregrine.core.settings import Section, field


@dataclass(frozen=True)
class StreamSettings(Section):
    nats: str = field("", "URL of an existing NATS server or cluster (nats://host:port, "
                          "comma-separated); empty starts the embedded server")
    nats_host: str = field("127.0.0.1", "address the embedded NATS server listens on")
    nats_port: int = field(4222, "port of the embedded NATS server (0 picks a free one)")
    pipelines: tuple[str, ...] = field((), "pipelines (module:attribute) that `peregrine serve` "
                                           "runs in its own process, writing through its "
                                           "vector store's front door")
    vector_url: str = field("", "Peregrine server a worker writes to and queries (empty: "
                                "this process's vector store, or http://127.0.0.1:6333)")
    embed_url: str = field("", "OpenAI-compatible API root for embed stages "
                               "(https://host/v1); empty runs the built-in all-MiniLM-L6-v2")
    embed_model: str = field("", "model name sent to embed_url")
    embed_threads: int = field(0, "threads of the built-in embedder (0: one per usable core)")
    embed_cache: int = field(50_000, "texts whose vectors an embed stage keeps, keyed by "
                                     "SHA-256 of the normalized text and model (0: no cache)")
    batch_size: int = field(256, "most events one micro-batch of a stage takes")
    batch_ms: float = field(5.0, "longest a micro-batch waits to fill, in milliseconds")
    max_ack_pending: int = field(2048, "events a pipeline's consumer hands out unacknowledged "
                                       "(back-pressure)")
    max_deliver: int = field(5, "deliveries of an event before it is dead-lettered")
    ack_wait_s: float = field(30.0, "seconds before an unacknowledged event is redelivered")
    dlq_prefix: str = field("peregrine.dlq", "subject prefix of dead letters "
                                             "(<prefix>.<pipeline>)")

    def validate(self) -> StreamSettings:
        if not 0 <= self.nats_port < 65536:
            raise InvalidInputError("stream.nats_port must be 0..65535")
        if self.embed_url and not self.embed_model:
            raise InvalidInputError("stream.embed_url needs stream.embed_model")
        if not 0 <= self.embed_threads <= 256:
            raise InvalidInputError("stream.embed_threads must be 0..256")
        if not 0 <= self.embed_cache <= 10_000_000:
            raise InvalidInputError("stream.embed_cache must be 0..10000000")
        for name in ("batch_size", "max_ack_pending", "max_deliver"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"stream.{name} must be positive")
        if self.batch_ms < 0 or self.ack_wait_s <= 0:
            raise InvalidInputError("stream.batch_ms must be >= 0 and ack_wait_s > 0")
        if not self.dlq_prefix or any(c in self.dlq_prefix for c in " *>"):
            raise InvalidInputError("stream.dlq_prefix must be a plain subject prefix")
        return self
