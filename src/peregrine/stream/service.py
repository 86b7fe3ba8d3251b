"""The stream face's front door: the bus, pipeline workers and dead letters.

``StreamService`` owns the NATS connection details of one ``peregrine serve``:
it starts the embedded NATS server (unless ``[stream] nats`` names one) and
records its URL under the data directory, where ``peregrine worker`` finds it.
``run_worker`` runs one declared pipeline until stopped; ``DeadLetters`` lists
and replays what a pipeline gave up on.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from peregrine.core.errors import InvalidInputError, UnavailableError
from peregrine.runtime.nats import EmbeddedNats
from peregrine.stream.codecs import Codec, protobuf
from peregrine.stream.pipeline import PermanentError, Pipeline
from peregrine.stream.settings import StreamSettings

__all__ = [
    "Codec",
    "PermanentError",
    "Pipeline",
    "StreamService",
    "StreamSettings",
    "dead_letters",
    "delete_dead_letters",
    "load_pipeline",
    "nats_url",
    "pipelines",
    "protobuf",
    "replay_dead_letters",
    "run_worker",
    "serve_worker",
]

URL_FILE = "nats.url"
log = logging.getLogger("peregrine.stream")


def nats_url(settings: StreamSettings, data: str | Path) -> str:
    """Where a worker connects: ``[stream] nats``, else the URL a local
    ``peregrine serve`` recorded in ``<data>/nats.url``."""
    if settings.nats:
        return settings.nats
    recorded = Path(data) / URL_FILE
    if recorded.is_file():
        return recorded.read_text().strip()
    raise InvalidInputError(f"no NATS URL: set --nats (stream.nats) or start `peregrine serve` "
                            f"with data directory {data} first")


class StreamService:
    """The bus of one server process."""

    def __init__(self, settings: StreamSettings, data: str | Path) -> None:
        self.settings = settings
        self.data = Path(data)
        self.embedded: EmbeddedNats | None = None
        self.url = settings.nats
        self._thread: threading.Thread | None = None
        self._stop_pipelines: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._embedder: Any = None
        self._embedder_lock = threading.Lock()

    def embedder(self) -> Any:
        """This process's default embedder (``[stream] embed_*``: the built-in model or
        a remote one, behind the text cache), built on first use; other faces embed
        with it too (the state face's semantic cache)."""
        with self._embedder_lock:
            if self._embedder is None:
                from peregrine.stream.worker import default_embedder

                self._embedder = default_embedder(self.settings)
            return self._embedder

    @classmethod
    def open(cls, settings: StreamSettings, data: str | Path) -> StreamService:
        service = cls(settings, data)
        if not settings.nats:
            service.embedded = EmbeddedNats(service.data / "nats", port=settings.nats_port,
                                            host=settings.nats_host).start()
            service.url = service.embedded.url
            service.data.mkdir(parents=True, exist_ok=True)
            (service.data / URL_FILE).write_text(service.url + "\n")
        return service

    # -- administration (the edge's stream protocol): one short connection per call,
    # -- so nothing outlives the request's event loop.
    async def pipelines(self) -> list[dict[str, Any]]:
        """Every pipeline on the bus: lag, in-flight, redeliveries, dead letters."""
        result: list[dict[str, Any]] = await _admin(self.url, self.settings,
                                                    lambda a: a.pipelines())
        return result

    async def pipeline(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await _admin(self.url, self.settings,
                                              lambda a: a.pipeline(name))
        return result

    async def list_dead_letters(self, name: str, limit: int = 100, after: int = 0
                                ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await _admin(
            self.url, self.settings, lambda a: a.dead_letters(name, limit, after))
        return result

    async def replay(self, name: str, seqs: list[int] | None = None) -> int:
        count: int = await _admin(self.url, self.settings, lambda a: a.replay(name, seqs))
        return count

    async def delete_dead_letters(self, name: str, seqs: list[int] | None = None) -> int:
        count: int = await _admin(self.url, self.settings,
                                  lambda a: a.delete_dead_letters(name, seqs))
        return count

    async def delete_pipeline(self, name: str) -> bool:
        done: bool = await _admin(self.url, self.settings, lambda a: a.delete_pipeline(name))
        return done

    # -- pipelines inside the server: [stream] pipelines -------------------------------
    def start_pipelines(self, vector: Any) -> None:
        """Run ``[stream] pipelines`` in this process, on a thread of their own, writing
        through ``vector`` (the vector face's front door) instead of HTTP. Each is
        loaded now, so a bad name stops the start-up; one that fails later is logged
        and restarted after a second."""
        specs = self.settings.pipelines
        if not specs:
            return
        from peregrine.stream.sinks import LocalVectorSink

        pipelines = [load_pipeline(spec) for spec in specs]
        ready = threading.Event()

        async def supervise(pipeline: Pipeline, stop: asyncio.Event) -> None:
            from peregrine.stream.worker import Worker

            while not stop.is_set():
                try:
                    await Worker(pipeline, self.settings, self.url,
                                 sink=LocalVectorSink(vector)).run(stop)
                except Exception:
                    log.exception("pipeline %s failed; restarting in 1 s", pipeline.name)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)

        async def main() -> None:
            stop = asyncio.Event()
            self._stop_pipelines = (asyncio.get_running_loop(), stop)
            ready.set()
            await asyncio.gather(*(supervise(p, stop) for p in pipelines))

        self._thread = threading.Thread(target=asyncio.run, args=(main(),),
                                        name="stream-pipelines", daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop_pipelines(self, timeout_s: float = 30.0) -> None:
        """Finish the batches in hand and stop; before the vector store closes."""
        if self._stop_pipelines is not None:
            loop, stop = self._stop_pipelines
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
            self._stop_pipelines = None
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def close(self) -> None:
        self.stop_pipelines()
        if self.embedded is not None:
            (self.data / URL_FILE).unlink(missing_ok=True)
            self.embedded.stop()
            self.embedded = None


def load_pipeline(spec: str) -> Pipeline:
    """``module:attribute`` (a ``Pipeline``, or a function returning one)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InvalidInputError(f"pipeline {spec!r}: expected module:attribute")
    # Like ``python -m``: modules of the working directory (``examples.x``) are found
    # even when this runs as an installed console script.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidInputError(f"pipeline {spec!r}: {exc}") from None
    if not isinstance(target, Pipeline) and callable(target):
        target = target()
    if not isinstance(target, Pipeline):
        raise InvalidInputError(f"pipeline {spec!r} is a {type(target).__name__}, not a Pipeline")
    return target


async def run_worker(pipeline: Pipeline, settings: StreamSettings, url: str,
                     stop: asyncio.Event | None = None, metrics: Any = None,
                     freeze_gc: bool = False) -> None:
    """Run ``pipeline`` against the bus at ``url`` until ``stop`` is set;
    ``freeze_gc`` when the process is the worker's own (see ``Worker``)."""
    from peregrine.stream.worker import Worker

    await Worker(pipeline, settings, url, metrics=metrics, freeze_gc=freeze_gc).run(stop)


def serve_worker(spec: str, settings: StreamSettings, data: str | Path,
                 metrics_port: int | None = None) -> int:
    """``peregrine worker``: run a pipeline until SIGTERM or SIGINT, then finish the
    batch in hand, hand back what was fetched, and exit 0."""
    pipeline = load_pipeline(spec)
    url = nats_url(settings, data)
    if not settings.vector_url:
        import dataclasses

        settings = dataclasses.replace(settings, vector_url="http://127.0.0.1:6333")
    if metrics_port is not None:
        from prometheus_client import start_http_server

        from peregrine.stream.metrics import StreamMetrics

        metrics = StreamMetrics()
        start_http_server(metrics_port, registry=metrics.registry)
    else:
        metrics = None

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await run_worker(pipeline, settings, url, stop, metrics, freeze_gc=True)

    asyncio.run(main())
    return 0


async def _admin(url: str, settings: StreamSettings, work: Any) -> Any:
    """``work(StreamAdmin)`` over a fresh connection to the bus at ``url``."""
    import nats
    from nats.errors import NoServersError

    from peregrine.stream.admin import StreamAdmin

    try:
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0,
                                allow_reconnect=False, error_cb=_quiet)
    except (NoServersError, OSError, TimeoutError) as exc:
        raise UnavailableError(f"the bus at {url} cannot be reached: "
                               f"{exc or type(exc).__name__}") from None
    try:
        return await work(StreamAdmin(nc.jetstream(), settings))
    finally:
        await nc.close()


async def _quiet(exc: Exception) -> None:
    """nats-py prints a traceback per failed attempt by default; the caller reports."""


def pipelines(settings: StreamSettings, data: str | Path) -> list[dict[str, Any]]:
    """``peregrine pipelines``: every pipeline on the bus with its lag."""
    result: list[dict[str, Any]] = asyncio.run(_admin(nats_url(settings, data), settings,
                                                      lambda a: a.pipelines()))
    return result


def dead_letters(settings: StreamSettings, data: str | Path, pipeline: str,
                 limit: int = 100, after: int = 0) -> list[dict[str, Any]]:
    """Summaries of a pipeline's dead letters (``peregrine dlq list``)."""
    result: list[dict[str, Any]] = asyncio.run(_admin(
        nats_url(settings, data), settings, lambda a: a.dead_letters(pipeline, limit, after)))
    return result


def replay_dead_letters(settings: StreamSettings, data: str | Path, pipeline: str,
                        seqs: list[int] | None = None) -> int:
    """Publish dead letters back to their subjects (``peregrine dlq replay``)."""
    count: int = asyncio.run(_admin(nats_url(settings, data), settings,
                                    lambda a: a.replay(pipeline, seqs)))
    return count


def delete_dead_letters(settings: StreamSettings, data: str | Path, pipeline: str,
                        seqs: list[int] | None = None) -> int:
    """Drop dead letters for good (``peregrine dlq delete``)."""
    count: int = asyncio.run(_admin(nats_url(settings, data), settings,
                                    lambda a: a.delete_dead_letters(pipeline, seqs)))
    return count
