"""Run the REST server: open the store, build the app, serve until a signal.

SIGTERM/SIGINT stop the listener, let requests in flight finish, then the app's
shutdown drains the engine pool and closes the store (flushing the WAL), and
the process exits 0. A second signal forces the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import orjson
import uvicorn

from peregrine.api.app import PeregrineApp
from peregrine.api.context import AppContext
from peregrine.api.observability import configure_logging
from peregrine.api.openapi import build_openapi
from peregrine.api.routes import all_operations
from peregrine.config import ServerConfig
from peregrine.runtime.idle_poll import IdlePoller, cpu_quota
from peregrine.vector.service import VectorService

log = logging.getLogger("peregrine.server")
_running: list[VectorService] = []


def running_service() -> VectorService | None:
    """The store of the server running in this process (for in-process helpers)."""
    return _running[-1] if _running else None


def create_app(config: ServerConfig, service: VectorService | None = None) -> PeregrineApp:
    if service is None:
        service = VectorService.open(config.data, fsync=config.fsync,
                                     cache_entries=config.cache_entries,
                                     cache_bytes=config.cache_bytes,
                                     snapshots=config.snapshot_dir())
    ctx = AppContext.create(config, service)
    operations = all_operations()
    ctx.openapi = orjson.dumps(build_openapi(operations))
    return PeregrineApp(ctx, operations)


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


def serve(config: ServerConfig) -> int:
    configure_logging(config.log_level)
    app = create_app(config)
    scheme = "https" if config.tls_cert else "http"
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        http="httptools",
        loop="uvloop",
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,  # no proxy in front by default: skip rewriting client addresses
        timeout_keep_alive=config.keep_alive_s,
        ssl_certfile=config.tls_cert or None,
        ssl_keyfile=config.tls_key or None,
        timeout_graceful_shutdown=max(1, int(config.request_timeout_s)),
    )
    server = GracefulServer(uv_config)
    _running.append(app.ctx.service)
    try:  # from this (main) thread: the pollers die with it, even on SIGKILL
        poller = IdlePoller().start() if config.idle_poll else None
    except BaseException:
        app.ctx.close()  # nothing started yet: close the store we opened
        raise
    if poller is not None and (quota := cpu_quota()) is not None:
        log.warning("idle_poll under a CPU quota: the pollers' time counts against it",
                    extra={"fields": {"cpu_quota": quota}})
    log.info("serving", extra={"fields": {
        "url": f"{scheme}://{config.host}:{config.port}", "data": config.data,
        "auth": bool(config.api_key or config.read_only_api_key),
        "idle_poll_cpus": poller.cpus if poller else []}})
    try:
        server.run()
    finally:
        if poller is not None:
            poller.stop()
        if app.ctx.ready:  # startup happened but shutdown did not run (bind failure)
            app.ctx.close()
    if not server.started:
        app.ctx.close()
        return 1
    return 0
