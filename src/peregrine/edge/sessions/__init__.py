"""Session state over HTTP, at /sessions."""

from peregrine.edge.sessions.protocol import SessionsProtocol

__all__ = ["SessionsProtocol"]
