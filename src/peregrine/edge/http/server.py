"""Serve an ``EdgeApp`` with uvicorn until a signal.

SIGTERM/SIGINT stop the listener and let requests in flight finish; the
app's shutdown then drains the engine pool and closes the faces (flushing
their stores), and the process exits 0. A second signal forces the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

import uvicorn

from peregrine.edge.http.app import EdgeApp
from peregrine.edge.http.settings import HttpSettings
from peregrine.edge.http.transport import ConnectionLimits, guarded_protocol


class GracefulServer(uvicorn.Server):
    """uvicorn re-raises a caught SIGTERM after shutdown (exit 143); we exit 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


def run(app: EdgeApp, settings: HttpSettings) -> bool:
    """Serve until stopped; False when the server never started (e.g. the port is taken)."""
    limits = ConnectionLimits(settings.header_timeout_s, settings.body_timeout_s,
                              settings.connection_limit())
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=guarded_protocol(limits, app.runtime.metrics),
        loop="uvloop",
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,  # no proxy in front by default: skip rewriting client addresses
        timeout_keep_alive=settings.keep_alive_s,
        ssl_certfile=settings.tls_cert or None,
        ssl_keyfile=settings.tls_key or None,
        timeout_graceful_shutdown=max(1, int(settings.request_timeout_s)),
    )
    server = GracefulServer(config)
    server.run()
    return bool(server.started)
