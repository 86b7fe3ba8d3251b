"""Session state over HTTP, at /sessions, and durable settings at /state."""

from peregrine.edge.sessions.protocol import SessionsProtocol, StateProtocol

__all__ = ["SessionsProtocol", "StateProtocol"]
