"""Stream administration over HTTP: pipelines, lag and dead letters, at /streams."""

from peregrine.edge.streams.protocol import StreamsProtocol

__all__ = ["StreamsProtocol"]
