"""Request bodies: size-capped reading, JSON and msgpack decoding."""

from __future__ import annotations

from typing import Any

import msgpack
import orjson
from starlette.types import Receive

from peregrine.edge.http import slicing
from peregrine.edge.http.protocol import HttpError

JSON = b"application/json"
# curl's default; Qdrant's documented curl examples set JSON, shell users often do not.
_LENIENT_JSON = (b"", JSON, b"application/x-www-form-urlencoded", b"text/plain")
MSGPACK_TYPES = (b"application/msgpack", b"application/x-msgpack", b"application/vnd.msgpack")
# msgpack's errors that carry no text of their own.
_MSGPACK_ERRORS = {"FormatError": "a byte that starts no msgpack value (not msgpack data)",
                   "StackError": "the document is nested too deeply"}


def media_type(value: bytes | None) -> bytes:
    return value.split(b";", 1)[0].strip().lower() if value else b""


async def read_body(receive: Receive, limit: int, declared: int | None, setting: str) -> bytes:
    if declared is not None and declared > limit:
        raise HttpError(413, f"Payload too large: {declared} bytes, the limit is {limit} "
                             f"({setting})")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(499, "client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"Payload too large: more than {limit} bytes ({setting})")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def is_json(media: bytes) -> bool:
    return media in _LENIENT_JSON or media.endswith(b"+json")


def decode_large_document(body: bytes, media: bytes, hook: slicing.SliceHook | None) -> Any:
    """``decode_document`` for a body of megabytes (call it off the event loop): a JSON
    body that is mostly one array is parsed in slices, giving the GIL to other
    requests in between (``slicing``); anything else, including any syntax error,
    is parsed whole, which also words the error."""
    if is_json(media):
        try:
            layout = slicing.plan(body)
            if layout is not None:
                return slicing.decode(body, layout, hook or slicing.ListSlices())
        except (ValueError, LookupError, TypeError):  # orjson's error is a ValueError
            pass
    return decode_document(body, media)


def decode_document(body: bytes, media: bytes) -> Any:
    if is_json(media):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HttpError(400, f"Format error in JSON body: {exc}") from None
    if media in MSGPACK_TYPES:
        try:
            return msgpack.unpackb(body, raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises a zoo of types for bad input
            reason = str(exc) or _MSGPACK_ERRORS.get(type(exc).__name__, type(exc).__name__)
            raise HttpError(400, f"Format error in msgpack body: {reason}") from None
    raise HttpError(415, "Unsupported media type: send application/json or application/msgpack")
