"""Event payload codecs: JSON and msgpack built in, protobuf given a message class."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import orjson

from peregrine.core.encoding import plain
from peregrine.core.errors import InvalidInputError


@dataclass(frozen=True)
class Codec:
    name: str
    decode: Callable[[bytes], Any]
    encode: Callable[[Any], bytes]


def _msgpack_decode(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def _msgpack_encode(value: Any) -> bytes:
    out: bytes = msgpack.packb(value, use_bin_type=True, default=plain)
    return out


def _json_encode(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY, default=plain)


JSON = Codec("json", orjson.loads, _json_encode)
MSGPACK = Codec("msgpack", _msgpack_decode, _msgpack_encode)


def protobuf(message_class: Any) -> Codec:
    """A codec for one protobuf message class (needs the ``protobuf`` package).
    Events decode to dicts (``MessageToDict``, field names as declared)."""
    from google.protobuf import json_format

    def decode(data: bytes) -> Any:
        message = message_class()
        message.ParseFromString(data)
        return json_format.MessageToDict(message, preserving_proto_field_name=True)

    def encode(value: Any) -> bytes:
        out: bytes = json_format.ParseDict(value, message_class()).SerializeToString()
        return out

    return Codec(f"protobuf:{message_class.DESCRIPTOR.full_name}", decode, encode)


def resolve(codec: str | Codec) -> Codec:
    if isinstance(codec, Codec):
        return codec
    found = {"json": JSON, "msgpack": MSGPACK}.get(codec)
    if found is None:
        raise InvalidInputError(f"unknown codec {codec!r}: json, msgpack, or "
                                "codecs.protobuf(MessageClass)")
    return found
