"""The ASGI application: dispatch, auth, limits, encoding, metrics, logs, traces.

A plain ASGI callable instead of a framework stack: every request passes
through exactly the steps below, each measured for the Server-Timing header,
and the whole per-request overhead stays in the tens of microseconds.
"""

from __future__ import annotations

import gc
import hmac
import logging
import re
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl

import msgpack
import orjson
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from peregrine.api.context import AppContext
from peregrine.api.errors import ApiError, describe_validation, error_body, message_of, status_of
from peregrine.api.observability import request_id_var
from peregrine.api.operation import Access, Call, Encoded, Format, Operation, encode, envelope

log = logging.getLogger("peregrine.api")
access_log = logging.getLogger("peregrine.access")

_JSON = b"application/json"
# curl's default; Qdrant's documented curl examples set JSON, shell users often do not.
_LENIENT_JSON = (b"", _JSON, b"application/x-www-form-urlencoded", b"text/plain")
_MSGPACK_TYPES = (b"application/msgpack", b"application/x-msgpack", b"application/vnd.msgpack")
_REQUEST_ID_RE = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


class Router:
    def __init__(self, operations: list[Operation]) -> None:
        self.static: dict[tuple[str, str], Operation] = {}
        self.dynamic: dict[str, list[tuple[re.Pattern[str], Operation]]] = {}
        self.paths: list[re.Pattern[str]] = []
        self._memo: dict[tuple[str, str], tuple[Operation, dict[str, str]]] = {}
        for op in operations:
            if "{" not in op.path:
                self.static[(op.method, op.path)] = op
            pattern = re.compile(
                "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(op.path)) + "$")
            self.dynamic.setdefault(op.method, []).append((pattern, op))
            self.paths.append(pattern)

    _MEMO_LIMIT = 4096

    def match(self, method: str, path: str) -> tuple[Operation, dict[str, str]]:
        """The operation and path parameters (the caller must not modify them)."""
        op = self.static.get((method, path))
        if op is not None:
            return op, {}
        # Clients repeat the same few paths (one per collection and operation):
        # remember their matches instead of trying a dozen patterns each time.
        key = (method, path)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        for pattern, op in self.dynamic.get(method, ()):
            m = pattern.match(path)
            if m:
                if len(self._memo) >= self._MEMO_LIMIT:
                    self._memo.clear()
                found = self._memo[key] = (op, m.groupdict())
                return found
        if any(p.match(path) for p in self.paths):
            raise ApiError(405, f"Method {method} is not allowed on {path}")
        raise ApiError(404, f"Not found: no route for {method} {path}")


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return dict(scope["headers"])  # ASGI servers give header names lower-cased


def _media(value: bytes | None) -> bytes:
    return value.split(b";", 1)[0].strip().lower() if value else b""


async def read_body(receive: Receive, limit: int, declared: int | None) -> bytes:
    if declared is not None and declared > limit:
        raise ApiError(413, f"Payload too large: {declared} bytes, the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(499, "client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"Payload too large: more than {limit} bytes, the limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def decode_document(body: bytes, media: bytes) -> Any:
    if media in _LENIENT_JSON or media.endswith(b"+json"):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"Format error in JSON body: {exc}") from None
    if media in _MSGPACK_TYPES:
        try:
            return msgpack.unpackb(body, raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises a zoo of types for bad input
            raise ApiError(400, f"Format error in msgpack body: {exc}") from None
    raise ApiError(415, "Unsupported media type: send application/json or application/msgpack")


class PeregrineApp:
    def __init__(self, ctx: AppContext, operations: list[Operation]) -> None:
        self.ctx = ctx
        self.router = Router(operations)
        config = ctx.config
        self._keys = (config.api_key.encode(), config.read_only_api_key.encode())
        self._auth = bool(config.api_key or config.read_only_api_key)
        self._inline = config.inline_reads
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
                # Everything loaded so far (modules, schemas, the store's metadata)
                # lives as long as the server: keep it out of the collector's full
                # scans, which otherwise show up as latency spikes.
                gc.collect()
                gc.freeze()
                self.ctx.ready = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    self.ctx.close()
                except Exception as exc:
                    log.exception("shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                return

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
            raise ApiError(401, "Must provide an API key or an Authorization bearer token")
        full, read_only = self._keys
        if full and hmac.compare_digest(key, full):
            return
        if read_only and hmac.compare_digest(key, read_only):
            if op.access is Access.WRITE:
                raise ApiError(403, "Forbidden: the read-only API key cannot change data")
            return
        raise ApiError(401, "Invalid API key or bearer token")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        ctx = self.ctx
        method: str = scope["method"]
        path: str = scope["path"]
        headers = _headers(scope)
        request_id = self._request_id(headers)
        token = request_id_var.set(request_id)
        route = "unmatched"
        status = 500
        call: Call | None = None
        span = None
        fmt = Format.MSGPACK if _media(headers.get(b"accept")) in _MSGPACK_TYPES else Format.JSON
        try:
            op, path_params = self.router.match(method, path)
            route = op.path
            if ctx.tracing is not None:
                span = self._start_span(method, op, headers)
            self._check_access(op, headers)
            query = scope.get("query_string", b"")
            timeout = ctx.config.request_timeout_s
            media = _media(headers.get(b"content-type"))
            body = b""
            if op.adapter is not None:
                declared = headers.get(b"content-length")
                body = await read_body(receive, ctx.config.max_body_bytes,
                                       int(declared) if declared and declared.isdigit() else None)
            call = Call(ctx, scope, receive, path_params, fmt, body, timeout)
            call.span = span
            call.inline = self._inline and op.access is not Access.WRITE
            if not query:
                call.params = op.default_params
            else:
                try:
                    call.validate_params(op, dict(parse_qsl(query.decode("latin-1"),
                                                             keep_blank_values=True)))
                except ValidationError as exc:
                    raise ApiError(400, describe_validation(exc, "query parameters")) from None
            if call.params is not None and getattr(call.params, "timeout", None):
                call.deadline = started + min(timeout, float(call.params.timeout))
            if op.adapter is not None:
                if not body.strip():
                    if op.body_required:
                        raise ApiError(400, "Format error: this request needs a body")
                    document: Any = None
                else:
                    document = decode_document(body, media)
                try:
                    call.validate_body(op, document)
                except ValidationError as exc:
                    where = "msgpack body" if media in _MSGPACK_TYPES else "JSON body"
                    raise ApiError(400, describe_validation(exc, where)) from None
            parsed = time.perf_counter()
            call.timing["parse"] = parsed - started
            result = await op.handler(call)
            if isinstance(result, Response):
                status = result.status_code
                result.headers["x-request-id"] = request_id
                await result(scope, receive, send)
                return
            done = time.perf_counter()
            data = result.data if isinstance(result, Encoded) else encode(result, fmt)
            payload = envelope(data, fmt, done - started)
            call.timing["serialize"] = time.perf_counter() - done
            status = 200
            if op.search_like and "engine" in call.timing and not call.timing.get("cache_hit"):
                ctx.metrics.observe_search(path_params.get("collection_name", ""), op.name,
                                           call.timing["engine"])
            await self._send(send, status, payload, fmt, request_id, call.timing)
        except Exception as exc:
            status = status_of(exc)
            if status >= 500:
                log.exception("request failed: %s %s", method, path)
            if status == 499:
                return
            extra = exc.headers if isinstance(exc, ApiError) else {}
            await self._send(send, status, error_body(message_of(exc), started), Format.JSON,
                             request_id, call.timing if call else {}, extra)
        finally:
            elapsed = time.perf_counter() - started
            ctx.metrics.observe_request(method, route, status, elapsed)
            if ctx.config.access_log:
                access_log.info("request", extra={"fields": {
                    "method": method, "path": path, "route": route, "status": status,
                    "duration_ms": round(elapsed * 1000, 3)}})
            if span is not None:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    from opentelemetry.trace import Status, StatusCode

                    span.set_status(Status(StatusCode.ERROR))
                span.end()
            request_id_var.reset(token)

    def _start_span(self, method: str, op: Operation, headers: dict[bytes, bytes]) -> Any:
        from opentelemetry.trace import SpanKind

        tracing = self.ctx.tracing
        assert tracing is not None
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()
                   if k in (b"traceparent", b"tracestate")}
        return tracing.tracer.start_span(
            f"{method} {op.path}", context=tracing.propagator.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": op.path,
                        "peregrine.operation": op.name})

    @staticmethod
    async def _send(send: Send, status: int, payload: bytes, fmt: Format, request_id: str,
                    timing: dict[str, float], extra: dict[str, str] | None = None) -> None:
        parts = [f"{name};dur={timing[name] * 1000:.3f}"
                 for name in ("parse", "engine", "serialize") if name in timing]
        if "cache_hit" in timing:
            parts.append('cache;desc="hit"' if timing["cache_hit"] else 'cache;desc="miss"')
        headers = [
            (b"content-type", _MSGPACK_TYPES[0] if fmt is Format.MSGPACK else _JSON),
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
