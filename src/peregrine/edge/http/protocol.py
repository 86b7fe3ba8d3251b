"""What a wire protocol gives the HTTP edge, and what the edge gives its handlers.

A protocol package (``edge/qdrant``, later ``edge/openai``...) subclasses
``Protocol``: a name, the path prefix it is mounted at, its operations, and
how its success envelope and error bodies look. The edge does everything
else the same way for every protocol: routing, API keys, size and time
limits, body decoding and validation, request ids, ``Server-Timing``, metrics,
traces, and the response kinds below (an encoded result, a raw body, a
Starlette response such as a file, ``Accepted`` for work left running, and
``EventStream`` for server-sent events).

Handlers receive a ``Call``: the validated inputs plus ``run``, which runs
engine work off the event loop under the request's deadline.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, TypeVar

import msgpack
import orjson
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from peregrine.core.deadline import reset_deadline, set_deadline
from peregrine.core.encoding import plain
from peregrine.edge.http.slicing import SliceHook

if TYPE_CHECKING:
    from starlette.types import Receive, Scope

    from peregrine.edge.http.app import EdgeRuntime

T = TypeVar("T")

_INLINE_SLOW_S = 0.005


class Access(IntEnum):
    PUBLIC = 0  # health probes: never need a key
    READ = 1  # a read-only key suffices
    WRITE = 2  # needs the full key


class Format(IntEnum):
    JSON = 0
    MSGPACK = 1


class HttpError(Exception):
    """An error with its HTTP status decided where it is raised (auth, limits...)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None
                 ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class QueryModel(BaseModel):
    """Query-string parameters arrive as text: lax parsing, unknown ones rejected."""

    model_config = ConfigDict(extra="forbid")


class NoParams(QueryModel):
    pass


# -- response kinds ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Encoded:
    """A result already serialised in the response format (e.g. from the cache)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Accepted:
    """The work goes on after the answer (HTTP 202, the protocol's accepted body)."""


@dataclass(frozen=True, slots=True)
class EventStream:
    """Server-sent events: each item becomes one ``data:`` event (dicts and lists as
    JSON, str and bytes as they are); the stream ends when the iterator does."""

    events: AsyncIterator[Any]
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[["Call"], Awaitable[Any]]


@dataclass(eq=False)
class Operation:
    """One route. ``path`` is relative to the protocol's prefix."""

    method: str
    path: str
    name: str
    tag: str
    summary: str
    handler: Handler
    access: Access = Access.READ
    body: Any = None  # a model or union type; validated with a TypeAdapter
    params: type[QueryModel] = NoParams
    body_required: bool = True
    # A read that may run on the event loop when the engine is idle (see Call.run).
    inline: bool = False
    # Bodies up to http.max_body_bytes (bulk writes); others stop at
    # http.max_query_body_bytes, so that no query makes the server parse megabytes.
    bulk: bool = False
    # Converts the slices of a large JSON body's main array as they are parsed
    # (``slicing.SliceHook``); None keeps them as parsed.
    body_slices: SliceHook | None = None
    responses: dict[str, Any] = field(default_factory=dict)
    adapter: TypeAdapter[Any] | None = field(init=False, default=None)
    default_params: Any = field(init=False, default=None)
    protocol: Protocol | None = field(init=False, default=None)
    # Moving average of engine seconds per call: slow operations never run inline.
    # It starts high, so an operation runs on the pool until it has shown it is cheap.
    engine_ewma: float = field(init=False, default=1.0)

    def __post_init__(self) -> None:
        if self.body is not None:
            self.adapter = TypeAdapter(self.body)
        self.default_params = self.params()  # what an empty query string validates to


class Protocol:
    """One wire format: override the envelope, the error body and the operations."""

    name = "edge"
    prefix = ""  # "" mounts at the root; "/v1" under it

    def operations(self) -> list[Operation]:
        return []

    def accepts_key(self, key: bytes) -> bool:
        """Keys of this protocol's own that open its routes besides the edge's keys
        (full access to this protocol only)."""
        return False

    def success(self, result: bytes, fmt: Format, seconds: float) -> bytes:
        """The body of a 200 around an already encoded result."""
        return result

    def accepted(self, seconds: float) -> bytes:
        return b'{"status":"accepted"}'

    def error(self, status: int, message: str, seconds: float) -> bytes:
        """The JSON body of an error answer."""
        return orjson.dumps({"error": message})

    def validation_error(self, exc: ValidationError, where: str) -> HttpError:
        """How this protocol reports a body or query that does not validate."""
        return HttpError(400, describe_validation(exc, f"Format error in {where}"))


_MP_HEAD: bytes = b"\x83" + msgpack.packb("result")
_MP_TAIL: bytes = msgpack.packb("status") + msgpack.packb("ok") + msgpack.packb("time")


class ResultEnvelope(Protocol):
    """Qdrant's envelope, which other protocols of this server reuse so that one
    client helper reads every answer: ``{"result": ..., "status": "ok", "time": s}``,
    errors ``{"status": {"error": "..."}, "time": s}``, work left running 202
    ``{"status": "accepted", "time": s}``."""

    def success(self, result: bytes, fmt: Format, seconds: float) -> bytes:
        """The envelope spliced around the already encoded result (no re-encoding)."""
        if fmt is Format.MSGPACK:
            return _MP_HEAD + result + _MP_TAIL + bytes(msgpack.packb(seconds))
        return (b'{"result":' + result + b',"status":"ok","time":'
                + repr(seconds).encode() + b"}")

    def accepted(self, seconds: float) -> bytes:
        return orjson.dumps({"status": "accepted", "time": seconds})

    def error(self, status: int, message: str, seconds: float) -> bytes:
        return orjson.dumps({"status": {"error": message}, "time": seconds})


def describe_validation(exc: ValidationError, prefix: str, limit: int = 3) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    suffix = f" (and {more} more)" if more > 0 else ""
    return f"{prefix}: " + "; ".join(parts) + suffix


# -- encoding -------------------------------------------------------------------------
def encode(value: Any, fmt: Format) -> bytes:
    if fmt is Format.MSGPACK:
        return bytes(msgpack.packb(value, default=plain, use_bin_type=True))
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


# -- the request as a handler sees it --------------------------------------------------
class Call:
    """One request: validated inputs, the request's deadline and engine access."""

    __slots__ = ("body", "deadline", "edge", "fmt", "inline", "op", "params", "path",
                 "raw_body", "receive", "request_id", "scope", "span", "started", "timing")

    def __init__(self, edge: EdgeRuntime, op: Operation, scope: Scope, receive: Receive,
                 path: dict[str, str], fmt: Format, raw_body: bytes, deadline: float,
                 request_id: str) -> None:
        self.edge = edge
        self.op = op
        self.scope = scope
        self.receive = receive
        self.path = path
        self.fmt = fmt
        self.raw_body = raw_body
        self.body: Any = None
        self.params: Any = None
        self.timing: dict[str, float] = {}
        self.deadline = deadline
        self.span: Any = None
        self.inline = False  # set by the edge: this call may run engine work inline
        self.request_id = request_id
        self.started = False  # the response has begun (a stream, a file)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run engine work, bounded by the request's deadline.

        Normally on the engine pool, so that work uses every core (FAISS and
        numpy release the GIL). A cheap read arriving while no engine work is
        in flight runs right here instead: handing it to a thread and back
        costs ~0.3 ms of wake-ups, the largest part of the HTTP overhead of a
        lone client. Only operations marked ``inline`` whose recent calls took
        under a millisecond qualify, and only with a small body; one slow call
        run inline sends its operation back to the pool for a long while. So
        the loop is held for a millisecond or so at worst, about what the
        thread hand-off it saves costs. Either way the deadline reaches the
        engine, whose loops stop once it has passed.
        """
        edge = self.edge
        started = time.perf_counter()
        remaining = self.deadline - started
        if remaining <= 0:
            raise HttpError(408, "Timeout: the request ran past its deadline")
        try:
            if self.inline and edge.busy == 0:
                edge.busy += 1
                token = set_deadline(self.deadline)
                try:
                    return fn(*args)
                finally:
                    edge.busy -= 1
                    reset_deadline(token)
                    spent = time.perf_counter() - started
                    if spent > _INLINE_SLOW_S:  # it held the loop: never again soon
                        self.op.engine_ewma = max(self.op.engine_ewma, 100 * spent)
            context = contextvars.copy_context()  # request id reaches the engine's logs
            work = edge.submit(context.run, _under_deadline, self.deadline, fn, args)
            try:
                return await asyncio.wait_for(asyncio.wrap_future(work), remaining)
            except TimeoutError:
                raise HttpError(
                    408, f"Timeout: the operation did not finish within {remaining:.3f} s; "
                    "a write may still complete") from None
        finally:
            spent = time.perf_counter() - started
            self.timing["engine"] = self.timing.get("engine", 0.0) + spent
            op = self.op
            op.engine_ewma += 0.2 * (spent - op.engine_ewma)

    def spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        """Start engine work that outlives the answer (``Accepted``); failures are logged."""
        self.edge.spawn(fn, *args)

    def cache_key(self) -> bytes:
        """The request as a result cache knows it: method, path, query, format, body."""
        scope = self.scope
        return b"%s %s?%s %d %s" % (scope["method"].encode(), scope["path"].encode(),
                                   scope.get("query_string", b""), self.fmt, self.raw_body)


def _under_deadline(at: float, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    token = set_deadline(at)
    try:
        return fn(*args)
    finally:
        reset_deadline(token)
