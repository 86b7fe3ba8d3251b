"""The composition root: settings -> faces -> protocols -> the HTTP edge.

This is the one place that knows every part. It reads the settings (one
section per face and per protocol), opens each face through its front door,
registers the faces' metrics in the process registry, mounts every protocol
listed in ``PROTOCOLS`` on the shared edge, and serves it.

Adding a wire protocol: a package under ``peregrine/edge/`` with a
``Protocol`` subclass, and one line in ``PROTOCOLS``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from peregrine.core.errors import InvalidInputError
from peregrine.core.logs import configure_logging
from peregrine.core.metrics import new_registry
from peregrine.core.settings import Section, field, load_settings
from peregrine.edge.http.app import EdgeApp
from peregrine.edge.http.metrics import HttpMetrics
from peregrine.edge.http.protocol import Protocol
from peregrine.edge.http.server import run
from peregrine.edge.http.settings import HttpSettings
from peregrine.edge.http.tracing import Tracing
from peregrine.edge.openai.protocol import OpenAIProtocol
from peregrine.edge.openai.router import OpenAIRouterProtocol
from peregrine.edge.qdrant import QdrantProtocol, QdrantSettings
from peregrine.edge.sessions import SessionsProtocol, StateProtocol
from peregrine.edge.streams import StreamsProtocol
from peregrine.mq.service import MqSettings, load_service, run_service
from peregrine.runtime import hugepages
from peregrine.runtime.idle_poll import IdlePoller, cpu_quota
from peregrine.runtime.settings import RuntimeSettings
from peregrine.serve.service import InferenceService, LlmSettings, ReplicaRouter
from peregrine.state.service import StateService, StateSettings
from peregrine.stream.service import StreamService, StreamSettings
from peregrine.vector.service import VectorService, VectorSettings

log = logging.getLogger("peregrine.server")


@dataclass(frozen=True)
class Settings(Section):
    """Everything ``peregrine serve`` reads; see docs/server.md for each setting."""

    data: str = field("./data", "data directory (every face keeps its state under it)")
    log_level: str = field("info", "debug | info | warning | error")
    http: HttpSettings = dataclasses.field(default_factory=HttpSettings)
    vector: VectorSettings = dataclasses.field(default_factory=VectorSettings)
    qdrant: QdrantSettings = dataclasses.field(default_factory=QdrantSettings)
    stream: StreamSettings = dataclasses.field(default_factory=StreamSettings)
    state: StateSettings = dataclasses.field(default_factory=StateSettings)
    llm: LlmSettings = dataclasses.field(default_factory=LlmSettings)
    mq: MqSettings = dataclasses.field(default_factory=MqSettings)
    runtime: RuntimeSettings = dataclasses.field(default_factory=RuntimeSettings)

    def validate(self) -> Settings:
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise InvalidInputError("log_level must be debug, info, warning or error")
        return self


def load(file: str | Path | None = None, overrides: dict[str, object] | None = None
         ) -> Settings:
    """Defaults < TOML file (or PEREGRINE_CONFIG) < PEREGRINE_* variables < ``overrides``."""
    return load_settings(Settings, file, overrides=overrides)


@dataclass
class Faces:
    """The faces this process runs, each behind its front door."""

    vector: VectorService
    stream: StreamService | None = None
    state: StateService | None = None
    inference: InferenceService | None = None

    def close(self) -> None:
        if self.inference is not None:
            self.inference.close()
        try:
            if self.stream is not None:  # in-process pipelines write to the store
                self.stream.stop_pipelines()
        finally:
            try:
                self.vector.close()
            finally:
                try:
                    if self.state is not None:
                        self.state.close()
                finally:
                    if self.stream is not None:
                        self.stream.close()


# Every protocol the edge serves: one line each.
PROTOCOLS: list[Callable[[Faces, Settings], Protocol | None]] = [
    lambda faces, settings: QdrantProtocol(faces.vector, settings.qdrant),
    lambda faces, settings: StreamsProtocol(faces.stream) if faces.stream else None,
    lambda faces, settings: SessionsProtocol(faces.state) if faces.state else None,
    lambda faces, settings: StateProtocol(faces.state) if faces.state else None,
    lambda faces, settings: OpenAIProtocol(faces.inference) if faces.inference else None,
]


@dataclass(frozen=True)
class StorageRecovery:
    """A storage snapshot to recover into the data directory before anything is
    served (``serve --storage-snapshot PATH [--force-snapshot]``, as Qdrant's
    flags): no request, pipeline or client sees the storage half-recovered."""

    archive: Path
    force: bool = False


@dataclass
class Peregrine:
    """A built process: its settings, faces, metrics registry and HTTP edge."""

    settings: Settings
    faces: Faces
    registry: CollectorRegistry
    app: EdgeApp


def open_faces(settings: Settings, registry: CollectorRegistry | None = None,
               recover: StorageRecovery | None = None) -> Faces:
    hugepages.configure(settings.runtime.huge_pages)
    vector = VectorService.open(settings.data, settings.vector)
    try:
        if recover is not None:  # before the pipelines, which write to the store
            recover_storage(vector, recover)
        stream = StreamService.open(settings.stream, settings.data)
    except BaseException:
        vector.close()
        raise
    faces = Faces(vector=vector, stream=stream)
    try:
        faces.state = StateService.open(settings.state, settings.data, registry)
        faces.state.attach_semantic(vector, stream.embedder)
        faces.state.attach_docs_hub(stream.url)
        stream.start_pipelines(vector)
        faces.inference = open_inference(settings.llm, registry)
    except BaseException:
        faces.close()
        raise
    return faces


def recover_storage(vector: VectorService, recover: StorageRecovery) -> None:
    """Recover a storage snapshot; a bad archive or a name conflict without
    ``force`` is an InvalidInputError that changed nothing (the server stops)."""
    names = vector.recover_full_snapshot(recover.archive, force=recover.force)
    log.info("storage snapshot recovered", extra={"fields": {
        "archive": str(recover.archive), "collections": names, "force": recover.force}})


def open_inference(settings: LlmSettings, registry: CollectorRegistry | None
                   ) -> InferenceService | None:
    """The inference face when ``[llm] enabled`` and llama-cpp-python is installed (the
    ``llm`` extra); without it the server runs without ``/v1``."""
    if not settings.enabled:
        return None
    if importlib.util.find_spec("llama_cpp") is None:
        log.warning("llama-cpp-python is not installed: /v1 is not served "
                    "(pip install 'peregrine[llm]')")
        return None
    return InferenceService.open(settings, registry)


def build(settings: Settings, faces: Faces | None = None,
          protocols: list[Callable[[Faces, Settings], Protocol | None]] | None = None,
          recover: StorageRecovery | None = None) -> Peregrine:
    """Open the faces (unless given; ``recover`` first recovers a storage snapshot
    into them) and mount the protocols; serving is ``serve``'s job."""
    registry = new_registry()
    faces = faces or open_faces(settings, registry, recover)
    try:
        faces.vector.register_metrics(registry)
        made = [make(faces, settings) for make in (PROTOCOLS if protocols is None
                                                   else protocols)]
        mounted = [p for p in made if p is not None]
        app = EdgeApp(settings.http, mounted, HttpMetrics(registry),
                      Tracing.from_env(settings.http.tracing), on_close=[faces.close])
    except BaseException:
        faces.close()
        raise
    return Peregrine(settings, faces, registry, app)


def serve(settings: Settings, on_started: Callable[[Peregrine], None] | None = None,
          recover: StorageRecovery | None = None) -> int:
    """Build (recovering a storage snapshot first when asked) and serve until a
    signal; the exit status (1: the server never started)."""
    configure_logging(settings.log_level)
    process = build(settings, recover=recover)
    try:  # from this (main) thread: the pollers die with it, even on SIGKILL
        poller = IdlePoller().start() if settings.runtime.idle_poll else None
    except BaseException:
        process.app.close()  # nothing is served yet: close the faces we opened
        raise
    if poller is not None and (quota := cpu_quota()) is not None:
        log.warning("idle_poll under a CPU quota: the pollers' time counts against it",
                    extra={"fields": {"cpu_quota": quota}})
    http = settings.http
    scheme = "https" if http.tls_cert else "http"
    log.info("serving", extra={"fields": {
        "url": f"{scheme}://{http.host}:{http.port}", "data": settings.data,
        "nats": process.faces.stream.url if process.faces.stream else None,
        "protocols": [p.name for p in process.app.protocols],
        "auth": bool(http.api_key or http.read_only_api_key),
        "idle_poll_cpus": poller.cpus if poller else []}})
    if on_started is not None:
        on_started(process)
    try:
        started = run(process.app, http)
    finally:
        if poller is not None:
            poller.stop()
        process.app.close()  # no-op after a clean shutdown; closes after a bind failure
    return 0 if started else 1


def serve_llm(settings: Settings) -> int:
    """``peregrine llm``: the inference face alone behind the OpenAI API (``/v1``,
    with ``/healthz``, ``/readyz`` and ``/metrics``); the model loads before the
    server answers."""
    configure_logging(settings.log_level)
    registry = new_registry()
    llm = dataclasses.replace(settings.llm, preload=True)
    http = settings.http
    if llm.replicas > 1 or llm.upstreams:
        router = ReplicaRouter.with_replicas(llm, registry, llm.model_name)
        app = EdgeApp(http, [OpenAIRouterProtocol(router, llm)], HttpMetrics(registry),
                      Tracing.from_env(http.tracing), on_close=[router.close])
        log.info("routing", extra={"fields": {
            "url": f"http://{http.host}:{http.port}/v1",
            "upstreams": [u.url for u in router.upstreams]}})
        return 0 if run(app, http) else 1
    service = InferenceService.open(llm, registry)
    app = EdgeApp(http, [OpenAIProtocol(service)], HttpMetrics(registry),
                  Tracing.from_env(http.tracing), on_close=[service.close])
    log.info("serving", extra={"fields": {
        "url": f"http://{http.host}:{http.port}/v1", "model": service.model_id,
        "slots": llm.slots, "threads": llm.n_threads}})
    return 0 if run(app, http) else 1


def serve_mq(settings: Settings, spec: str) -> int:
    """``peregrine mq module:service``: one worker of a message-queue service, until
    SIGTERM (then it drains); Prometheus metrics on ``[mq] metrics_port``."""
    configure_logging(settings.log_level)
    service = load_service(spec)
    registry = new_registry()
    if settings.mq.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.mq.metrics_port, registry=registry)
    return run_service(service, settings.mq, registry, settings.data)
