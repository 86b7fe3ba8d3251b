"""What a route is: method, path, access level, body and query models, handler.

Routes are declared as data so that one table drives dispatch, auth, metrics
and the OpenAPI document; nothing can be routed but undocumented.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, TypeVar

import msgpack
import numpy as np
import orjson
from pydantic import TypeAdapter

from peregrine.api.errors import ApiError
from peregrine.api.schemas import NoParams, QueryModel

if TYPE_CHECKING:
    from starlette.types import Receive, Scope

    from peregrine.api.context import AppContext
    from peregrine.vector.collection.collection import Collection

T = TypeVar("T")


class Access(IntEnum):
    PUBLIC = 0  # health probes: never need a key
    READ = 1  # a read-only key suffices
    WRITE = 2  # needs the full key


class Format(IntEnum):
    JSON = 0
    MSGPACK = 1


@dataclass(frozen=True, slots=True)
class Encoded:
    """A result already serialised in the response format (e.g. from the cache)."""

    data: bytes


Handler = Callable[["Call"], Awaitable[Any]]


@dataclass(eq=False)
class Operation:
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
    search_like: bool = False  # engine time goes to the search histogram
    responses: dict[str, Any] = field(default_factory=dict)
    adapter: TypeAdapter[Any] | None = field(init=False, default=None)
    default_params: Any = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.body is not None:
            self.adapter = TypeAdapter(self.body)
        self.default_params = self.params()  # what an empty query string validates to


def _msgpack_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def encode(value: Any, fmt: Format) -> bytes:
    if fmt is Format.MSGPACK:
        return bytes(msgpack.packb(value, default=_msgpack_default, use_bin_type=True))
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


_MP_HEAD: bytes = b"\x83" + msgpack.packb("result")
_MP_TAIL: bytes = msgpack.packb("status") + msgpack.packb("ok") + msgpack.packb("time")


def envelope(result: bytes, fmt: Format, seconds: float) -> bytes:
    """Qdrant's success envelope around an already encoded result (cheap splice)."""
    if fmt is Format.MSGPACK:
        return _MP_HEAD + result + _MP_TAIL + bytes(msgpack.packb(seconds))
    return b'{"result":' + result + b',"status":"ok","time":' + repr(seconds).encode() + b"}"


class Call:
    """One request as a handler sees it: validated inputs and engine access."""

    __slots__ = ("body", "ctx", "deadline", "fmt", "inline", "params", "path", "raw_body",
                 "receive", "scope", "span", "timing")

    def __init__(self, ctx: AppContext, scope: Scope, receive: Receive, path: dict[str, str],
                 fmt: Format, raw_body: bytes, timeout: float) -> None:
        self.ctx = ctx
        self.scope = scope
        self.receive = receive
        self.path = path
        self.fmt = fmt
        self.raw_body = raw_body
        self.body: Any = None
        self.params: Any = None
        self.timing: dict[str, float] = {}
        self.deadline = time.perf_counter() + timeout
        self.span: Any = None
        self.inline = False  # a read may run on the event loop when nothing else does


    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run engine work, bounded by the request's deadline.

        Normally on the engine pool, so that searches use every core (FAISS and
        numpy release the GIL). A read arriving while no engine work is in
        flight runs right here instead: handing it to a thread and back costs
        ~0.3 ms of wake-ups, the largest part of the HTTP overhead of a lone
        client, and there is nothing for it to run in parallel with anyway.
        """
        ctx = self.ctx
        started = time.perf_counter()
        remaining = self.deadline - started
        if remaining <= 0:
            raise ApiError(408, "Timeout: the request ran past its deadline")
        ctx.busy += 1
        try:
            if self.inline and ctx.busy == 1:
                return fn(*args)
            loop = asyncio.get_running_loop()
            context = contextvars.copy_context()  # request id reaches the engine's logs
            future = loop.run_in_executor(ctx.executor, context.run, fn, *args)
            try:
                return await asyncio.wait_for(future, remaining)
            except TimeoutError:
                raise ApiError(
                    408, f"Timeout: the operation did not finish within {remaining:.3f} s; "
                    "a write may still complete") from None
        finally:
            ctx.busy -= 1
            self.timing["engine"] = self.timing.get("engine", 0.0) + (
                time.perf_counter() - started)

    def cache_key(self) -> bytes:
        """The request as the result cache knows it: method, path, query, format, body."""
        scope = self.scope
        return b"%s %s?%s %d %s" % (scope["method"].encode(), scope["path"].encode(),
                                   scope.get("query_string", b""), self.fmt, self.raw_body)

    async def cached(self, collection: str, compute: Callable[[Collection], Any]) -> Encoded:
        """Encoded result of a read, from the result cache when nothing was written since."""
        service = self.ctx.service
        fmt = self.fmt
        key = self.cache_key() if service.caches_reads else b""  # the key copies the body

        def work() -> tuple[bytes, bool]:
            return service.cached_read(collection, key, lambda c: encode(compute(c), fmt))

        data, hit = await self.run(work)
        self.timing["cache_hit"] = 1.0 if hit else 0.0
        return Encoded(data)

    def validate_params(self, op: Operation, query: dict[str, str]) -> None:
        self.params = op.params.model_validate(query)

    def validate_body(self, op: Operation, document: Any) -> None:
        assert op.adapter is not None
        self.body = op.adapter.validate_python(document)

