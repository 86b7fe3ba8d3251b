"""The shared HTTP edge: one ASGI app, one transport, for every protocol."""
