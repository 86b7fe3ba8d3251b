"""The HTTP edge: one ASGI application in front of every mounted protocol.

A plain ASGI callable instead of a framework stack: every request passes
through exactly the steps below, each measured for the ``Server-Timing``
header, and the whole per-request overhead stays in the tens of microseconds:

route -> API key -> body (size-capped) -> query and body validation -> the
handler -> the response in its kind -> metrics, access log, trace span.

What differs between protocols (envelope, error body, validation messages)
is asked of the operation's ``Protocol``; nothing here knows a wire format
beyond JSON and msgpack bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import hmac
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl

import orjson
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from peregrine.core.logs import request_id_var
from peregrine.edge.http.bodies import (
    JSON,
    MSGPACK_TYPES,
    decode_document,
    decode_large_document,
    media_type,
    read_body,
)
from peregrine.edge.http.errors import message_of, status_of
from peregrine.edge.http.health import health_operations
from peregrine.edge.http.metrics import HttpMetrics
from peregrine.edge.http.protocol import (
    Accepted,
    Access,
    Call,
    Encoded,
    EventStream,
    Format,
    HttpError,
    Operation,
    Protocol,
    encode,
)
from peregrine.edge.http.routing import Router
from peregrine.edge.http.settings import HttpSettings
from peregrine.edge.http.tracing import Tracing
from peregrine.runtime.gcpause import gc_paused

log = logging.getLogger("peregrine.http")
access_log = logging.getLogger("peregrine.access")

_REQUEST_ID_RE = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
# Bodies larger than this are decoded and validated on the engine pool, not the loop.
_DECODE_INLINE_BYTES = 256 << 10
# A read runs inline only with a body this small and a recent engine time this short.
_INLINE_BODY_BYTES = 16 << 10
_INLINE_ENGINE_S = 0.001


class EdgeRuntime:
    """What handlers share: the engine pool, work left running, readiness."""

    def __init__(self, settings: HttpSettings, metrics: HttpMetrics,
                 tracing: Tracing | None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.tracing = tracing
        self.executor = ThreadPoolExecutor(settings.engine_threads(),
                                           thread_name_prefix="engine")
        self.busy = 0  # engine calls in flight (touched only on the event loop)
        self.ready = False
        self._spawned: set[Future[Any]] = set()
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Engine work on the pool (call on the event loop). It counts as busy until
        it has ended, even after its request stopped waiting for it (a timeout), so
        no read runs inline on the loop meanwhile."""
        future = self.executor.submit(fn, *args)
        self.busy += 1
        loop = asyncio.get_running_loop()
        future.add_done_callback(lambda _: _call_soon(loop, self._release))
        return future

    def _release(self) -> None:
        self.busy -= 1

    def spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        context = contextvars.copy_context()
        future = self.submit(context.run, fn, *args)
        self._spawned.add(future)
        future.add_done_callback(self._finished)

    def _finished(self, future: Future[Any]) -> None:
        self._spawned.discard(future)
        exc = future.exception()
        if exc is None:
            return
        if status_of(exc) >= 500:
            log.error("background operation failed: %s", message_of(exc), exc_info=exc)
        else:  # the caller's mistake, reported where the caller can no longer see it
            log.warning("background operation refused: %s", message_of(exc))

    def close(self) -> None:
        """Wait for engine work in flight, including work answered with 202."""
        self.ready = False
        if self._closed:
            return
        self._closed = True
        self.executor.shutdown(wait=True)
        if self.tracing is not None:
            self.tracing.shutdown()


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop counts nothing any more
        loop.call_soon_threadsafe(fn)


class EdgeApp:
    def __init__(self, settings: HttpSettings, protocols: Sequence[Protocol],
                 metrics: HttpMetrics, tracing: Tracing | None = None,
                 on_close: Sequence[Callable[[], None]] = ()) -> None:
        self.settings = settings
        self.runtime = EdgeRuntime(settings, metrics, tracing)
        self.protocols = list(protocols)
        mounts = [(p, p.operations()) for p in self.protocols]
        for protocol, ops in mounts:
            for op in ops:
                op.protocol = protocol
        self.router = Router(mounts, health_operations())
        self._fallback = Protocol()
        self._on_close = list(on_close)
        self._keys = (settings.api_key.encode(), settings.read_only_api_key.encode())
        self._auth = bool(settings.api_key or settings.read_only_api_key)
        self._prefix = uuid.uuid4().hex[:8]
        self._counter = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Everything loaded so far (modules, schemas, the stores' metadata)
                # lives as long as the server: keep it out of the collector's full
                # scans, which otherwise show up as latency spikes.
                gc.collect()
                gc.freeze()
                self.runtime.ready = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    self.close()
                except Exception as exc:
                    log.exception("shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    def close(self) -> None:
        """Drain engine work, then close the faces (flushing their stores)."""
        self.runtime.close()
        for close in self._on_close:
            close()
        self._on_close.clear()

    def _request_id(self, headers: dict[bytes, bytes]) -> str:
        given = headers.get(b"x-request-id")
        if given and _REQUEST_ID_RE.match(given):
            return given.decode()
        self._counter += 1
        return f"{self._prefix}-{self._counter:x}"

    def _check_access(self, op: Operation, headers: dict[bytes, bytes]) -> None:
        if op.access is Access.PUBLIC or not self._auth:
            return
        key = headers.get(b"api-key")
        if key is None:
            auth = headers.get(b"authorization", b"")
            if auth[:7].lower() == b"bearer ":
                key = auth[7:].strip()
        if not key:
            raise HttpError(401, "Must provide an API key or an Authorization bearer token")
        full, read_only = self._keys
        if full and hmac.compare_digest(key, full):
            return
        if read_only and hmac.compare_digest(key, read_only):
            if op.access is Access.WRITE:
                raise HttpError(403, "Forbidden: the read-only API key cannot change data")
            return
        if op.protocol is not None and op.protocol.accepts_key(key):
            return  # a key of the protocol's own (the LLM API's per-class keys)
        raise HttpError(401, "Invalid API key or bearer token")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        runtime = self.runtime
        method: str = scope["method"]
        path: str = scope["path"]
        headers = dict(scope["headers"])  # ASGI servers give header names lower-cased
        request_id = self._request_id(headers)
        token = request_id_var.set(request_id)
        route = "unmatched"
        status = 500
        call: Call | None = None
        op: Operation | None = None
        span = None
        fmt = Format.MSGPACK if media_type(headers.get(b"accept")) in MSGPACK_TYPES else Format.JSON
        try:
            op, path_params = self.router.match(method, path)
            # The edge's own routes (health, metrics) answer errors like the root protocol.
            protocol = op.protocol or self.router.protocol_for(path) or self._fallback
            route = self.router.full_path(op)
            if runtime.tracing is not None:
                span = runtime.tracing.start_span(method, route, op.name, headers)
            self._check_access(op, headers)
            settings = self.settings
            body = b""
            if op.adapter is not None:
                declared = headers.get(b"content-length")
                limit, setting = ((settings.max_body_bytes, "http.max_body_bytes") if op.bulk
                                  else (min(settings.max_body_bytes,
                                            settings.max_query_body_bytes),
                                        "http.max_query_body_bytes"))
                body = await read_body(receive, limit,
                                       int(declared) if declared and declared.isdigit() else None,
                                       setting)
            call = Call(runtime, op, scope, receive, path_params, fmt, body,
                        started + settings.request_timeout_s, request_id)
            call.span = span
            query = scope.get("query_string", b"")
            if not query:
                call.params = op.default_params
            else:
                try:
                    call.params = op.params.model_validate(
                        dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)))
                except ValidationError as exc:
                    raise protocol.validation_error(exc, "query parameters") from None
                timeout = getattr(call.params, "timeout", None)
                if timeout:
                    call.deadline = min(call.deadline, started + float(timeout))
            if op.adapter is not None:
                call.body = await self._validated_body(op, protocol, body, headers)
            call.inline = (settings.inline_reads and op.inline
                           and len(body) <= _INLINE_BODY_BYTES
                           and op.engine_ewma < _INLINE_ENGINE_S)
            call.timing["parse"] = time.perf_counter() - started
            result = await op.handler(call)
            status = await self._respond(result, call, protocol, scope, receive, send, started)
        except Exception as exc:
            status = status_of(exc)
            if status >= 500:
                log.exception("request failed: %s %s", method, path)
            if status == 499:
                return
            if call is not None and call.started:  # mid-response: only the log can tell
                log.warning("response cut short: %s", message_of(exc))
                return
            protocol = (op.protocol if op is not None else None) \
                or self.router.protocol_for(path) or self._fallback
            extra = exc.headers if isinstance(exc, HttpError) else {}
            elapsed = time.perf_counter() - started
            await self._send(send, status, protocol.error(status, message_of(exc), elapsed),
                             Format.JSON, request_id, call.timing if call else {}, extra)
        finally:
            elapsed = time.perf_counter() - started
            runtime.metrics.observe_request(method, route, status, elapsed)
            if self.settings.access_log:
                access_log.info("request", extra={"fields": {
                    "method": method, "path": path, "route": route, "status": status,
                    "duration_ms": round(elapsed * 1000, 3)}})
            if span is not None:
                runtime.tracing.end_span(span, status)  # type: ignore[union-attr]
            request_id_var.reset(token)

    async def _validated_body(self, op: Operation, protocol: Protocol, body: bytes,
                              headers: dict[bytes, bytes]) -> Any:
        media = media_type(headers.get(b"content-type"))
        if not body.strip():
            if op.body_required:
                raise HttpError(400, "Format error: this request needs a body")
            return None  # the handler's defaults (e.g. a query without one: id order)
        if len(body) <= _DECODE_INLINE_BYTES:
            return self._validate(op, protocol, decode_document(body, media), media)
        # A large body takes milliseconds to parse: do it on the pool, in slices that
        # let the loop (and searches) run in between; pausing the collector meanwhile
        # more than halves the parse.
        def decode() -> Any:
            with gc_paused():
                document = decode_large_document(body, media, op.body_slices)
            return self._validate(op, protocol, document, media)

        return await asyncio.get_running_loop().run_in_executor(self.runtime.executor, decode)

    @staticmethod
    def _validate(op: Operation, protocol: Protocol, document: Any, media: bytes) -> Any:
        assert op.adapter is not None
        try:
            return op.adapter.validate_python(document)
        except ValidationError as exc:
            where = "msgpack body" if media in MSGPACK_TYPES else "JSON body"
            raise protocol.validation_error(exc, where) from None
        except RecursionError:
            raise HttpError(400, "Format error: the body is nested too deeply") from None

    async def _respond(self, result: Any, call: Call, protocol: Protocol, scope: Scope,
                       receive: Receive, send: Send, started: float) -> int:
        if isinstance(result, Response):
            result.headers["x-request-id"] = call.request_id
            await result(scope, receive, _marking_start(call, send))
            return result.status_code
        if isinstance(result, EventStream):
            await self._stream(result, call, _marking_start(call, send))
            return 200
        if isinstance(result, Accepted):
            body = protocol.accepted(time.perf_counter() - started)
            await self._send(send, 202, body, Format.JSON, call.request_id, call.timing)
            return 202
        done = time.perf_counter()
        data = result.data if isinstance(result, Encoded) else encode(result, call.fmt)
        payload = protocol.success(data, call.fmt, done - started)
        call.timing["serialize"] = time.perf_counter() - done
        await self._send(send, 200, payload, call.fmt, call.request_id, call.timing)
        return 200

    async def _stream(self, stream: EventStream, call: Call, send: Send) -> None:
        """Server-sent events until the iterator ends or the client goes away.

        uvicorn does not fail a send to a client that has gone, so the request's
        receive channel is watched for the disconnect, and the iterator is
        closed at once (a generator producing tokens stops producing them).
        """
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                   (b"x-request-id", call.request_id.encode())]
        headers += [(k.encode(), v.encode()) for k, v in stream.headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        events = aiter(stream.events)
        gone = asyncio.ensure_future(_disconnected(call.receive))
        try:
            while True:
                step = asyncio.ensure_future(anext(events))
                await asyncio.wait((step, gone), return_when=asyncio.FIRST_COMPLETED)
                if not step.done():  # the client left first
                    step.cancel()
                    await asyncio.gather(step, return_exceptions=True)
                    return
                try:
                    event = step.result()
                except StopAsyncIteration:
                    break
                await send({"type": "http.response.body", "body": sse_event(event),
                            "more_body": True})
        finally:
            gone.cancel()
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        await send({"type": "http.response.body", "body": b""})

    @staticmethod
    async def _send(send: Send, status: int, payload: bytes, fmt: Format, request_id: str,
                    timing: dict[str, float], extra: dict[str, str] | None = None) -> None:
        parts = [f"{name};dur={timing[name] * 1000:.3f}"
                 for name in ("parse", "engine", "serialize") if name in timing]
        if "cache_hit" in timing:
            parts.append('cache;desc="hit"' if timing["cache_hit"] else 'cache;desc="miss"')
        headers = [
            (b"content-type", MSGPACK_TYPES[0] if fmt is Format.MSGPACK else JSON),
            (b"content-length", str(len(payload)).encode()),
            (b"x-request-id", request_id.encode()),
        ]
        if parts:
            headers.append((b"server-timing", ", ".join(parts).encode()))
        for k, v in (extra or {}).items():
            headers.append((k.encode(), v.encode()))
        start: Message = {"type": "http.response.start", "status": status, "headers": headers}
        await send(start)
        await send({"type": "http.response.body", "body": payload})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _marking_start(call: Call, send: Send) -> Send:
    """``send``, noting on the call once the response has started (an error after
    that can no longer be answered with an error body)."""
    async def marked(message: Message) -> None:
        if message["type"] == "http.response.start":
            call.started = True
        await send(message)

    return marked


def sse_event(event: Any) -> bytes:
    """One server-sent event: ``data:`` lines (one per line of text) and a blank line."""
    if isinstance(event, bytes):
        text = event
    elif isinstance(event, str):
        text = event.encode()
    else:
        text = orjson.dumps(event, option=orjson.OPT_SERIALIZE_NUMPY)
    return b"".join(b"data: " + line + b"\n" for line in text.split(b"\n")) + b"\n"
