"""Vector fields of request bodies, validated straight into float32 arrays.

A JSON list of numbers or, in a msgpack body, raw little-endian float32 bytes
(the binary fast path: no per-float parsing at all). Booleans, strings and
nested lists are rejected here; NaN/inf and dimension checks stay in the engine.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import PlainValidator, WithJsonSchema

from peregrine.vector.service import Document

_LE_F32 = np.dtype("<f4")


def _unnamed(value: Any) -> Any:
    """Qdrant names the default vector "" and clients (LangChain, LlamaIndex) send
    ``{"": [...]}``: that is the one vector a Peregrine collection has."""
    if isinstance(value, dict) and len(value) == 1 and "" in value:
        return value[""]
    return value


def parse_vector(value: Any) -> np.ndarray:
    value = _unnamed(value)
    if isinstance(value, np.ndarray):  # converted while the body was decoded in slices
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) % 4:
            raise ValueError("a binary vector is little-endian float32: its length must be "
                             "a multiple of 4 bytes")
        return np.frombuffer(value, dtype=_LE_F32).astype(np.float32, copy=False)
    if isinstance(value, dict):
        raise ValueError("expected an array of numbers")
    if not isinstance(value, list) or not value:
        raise ValueError("a vector is a non-empty array of numbers")
    return _numeric(value, 1, "a vector is a flat array of numbers",
                    "a vector is a non-empty array of numbers")


MAX_NAMES = 16  # vectors per point, as per collection


def _named_value(value: Any, name: str) -> Any:
    """One named vector of a point: dense (float32 array), sparse (left as
    {"indices", "values"} for the engine to check) or a ``Document``."""
    if not isinstance(name, str):
        raise ValueError("vector names are strings")
    if isinstance(value, dict):
        if "text" in value:
            text, model = value.get("text"), value.get("model")
            if not isinstance(text, str) or not isinstance(model, str) or not model:
                raise ValueError(f"vector {name!r}: a document is {{\"text\": str, "
                                 "\"model\": str}")
            if value.get("options"):
                raise ValueError(f"vector {name!r}: document options are not supported")
            if len(text) > 1_000_000:
                raise ValueError(f"vector {name!r}: a document is at most 1,000,000 "
                                 "characters")
            return Document(text, model)
        if set(value) == {"indices", "values"}:
            return value
        raise ValueError(f"vector {name!r}: expected an array of numbers, "
                         '{"indices": [...], "values": [...]} or {"text", "model"}')
    if isinstance(value, list) and value and isinstance(value[0], list):
        try:
            return parse_multivector(value)
        except ValueError as exc:
            raise ValueError(f"vector {name!r}: {exc}") from None
    try:
        return parse_vector(value)
    except ValueError as exc:
        raise ValueError(f"vector {name!r}: {exc}") from None


def parse_multivector(value: Any) -> np.ndarray:
    """A multivector: a non-empty array of equally long arrays of numbers."""
    if not isinstance(value, list) or not value or not isinstance(value[0], list):
        raise ValueError("a multivector is an array of arrays of numbers")
    return _numeric(value, 2, "the vectors of a multivector must have one length",
                    "a multivector is an array of equally long arrays of numbers")


def parse_point_vector(value: Any) -> Any:
    """A point's vector: one array (the unnamed vector), or {name: vector}."""
    value = _unnamed(value)
    if isinstance(value, dict):
        if len(value) > MAX_NAMES:
            raise ValueError(f"a point has at most {MAX_NAMES} vectors")
        return {name: _named_value(v, name) for name, v in value.items()}
    return parse_vector(value)


def parse_batch_vectors(value: Any) -> Any:
    """A batch's vectors: a matrix (or binary blob) of the unnamed vector, or
    {name: [vector per point]}."""
    value = _unnamed(value)
    if isinstance(value, dict):
        if len(value) > MAX_NAMES:
            raise ValueError(f"a point has at most {MAX_NAMES} vectors")
        out: dict[str, list[Any]] = {}
        for name, column in value.items():
            if not isinstance(column, list):
                raise ValueError(f"vectors {name!r}: one vector per id, as an array")
            out[name] = [None if v is None else _named_value(v, name) for v in column]
        return out
    return parse_vectors(value)


def parse_vectors(value: Any) -> np.ndarray:
    """A batch: list of vectors (2-D) or one binary blob (1-D, reshaped by the caller)."""
    value = _unnamed(value)
    if isinstance(value, np.ndarray):  # converted while the body was decoded in slices
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return parse_vector(value)
    if isinstance(value, dict):
        raise ValueError("expected an array of arrays of numbers")
    if not isinstance(value, list):
        raise ValueError("vectors is an array of arrays of numbers")
    if not value:
        return np.empty((0, 0), dtype=np.float32)
    return _numeric(value, 2, "all vectors of a batch must have the same dimension",
                    "vectors is an array of equally long arrays of numbers")


def _numeric(value: list[Any], ndim: int, ragged: str, wrong: str) -> np.ndarray:
    """Nested JSON lists to float32, refusing ragged, nested-deeper and non-numeric ones."""
    try:
        arr = np.asarray(value)
    except ValueError:
        raise ValueError(ragged) from None
    if arr.ndim != ndim or arr.dtype.kind not in "iuf":
        raise ValueError(wrong)
    return arr.astype(np.float32)


def _float_rows(items: list[Any], ndim: int) -> np.ndarray | None:
    """``items`` as float32 when they are numbers nested ``ndim`` deep; else None (and
    validation later reports what is wrong with them)."""
    try:
        arr = np.asarray(items)
    except ValueError:
        return None
    if arr.ndim != ndim or arr.dtype.kind not in "iuf":
        return None
    return arr.astype(np.float32)


class UpsertSlices:
    """Turns the vectors of a large upsert body into float32 as each slice is parsed
    (``edge.http.slicing``), so that no single step holds the GIL for the whole
    batch: a batch's ``vectors`` become one matrix, each of the ``points`` its row."""

    def convert(self, path: tuple[str, ...], items: list[Any]) -> Any:
        if path == ("batch", "vectors"):
            rows = _float_rows(items, 2)
            return items if rows is None else rows
        if path == ("points",):
            for item in items:
                vector = item.get("vector") if isinstance(item, dict) else None
                if isinstance(vector, list) and vector:
                    row = _float_rows(vector, 1)
                    if row is not None:
                        item["vector"] = row
        return items

    def join(self, path: tuple[str, ...], parts: list[Any]) -> Any:
        if all(isinstance(p, np.ndarray) for p in parts) and len(
                {p.shape[1] for p in parts}) == 1:
            return np.concatenate(parts)
        out: list[Any] = []
        for part in parts:
            out.extend(part.tolist() if isinstance(part, np.ndarray) else part)
        return out


_VECTOR_SCHEMA: dict[str, Any] = {
    "type": "array", "items": {"type": "number"}, "minItems": 1,
    "description": "float32 values; in a msgpack body also raw little-endian float32 bytes",
}

Vector = Annotated[np.ndarray, PlainValidator(parse_vector), WithJsonSchema(_VECTOR_SCHEMA)]
Vectors = Annotated[
    np.ndarray, PlainValidator(parse_vectors),
    WithJsonSchema({"type": "array", "items": _VECTOR_SCHEMA}),
]
_NAMED_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": {"oneOf": [
    _VECTOR_SCHEMA,
    {"type": "object", "properties": {"indices": {"type": "array"}, "values": {"type": "array"}},
     "required": ["indices", "values"]},
    {"type": "object", "properties": {"text": {"type": "string"}, "model": {"type": "string"}},
     "required": ["text", "model"]}]}}
MultiVector = Annotated[np.ndarray, PlainValidator(parse_multivector), WithJsonSchema(
    {"type": "array", "items": _VECTOR_SCHEMA, "description": "a multivector (max_sim)"})]
PointVector = Annotated[Any, PlainValidator(parse_point_vector),
                        WithJsonSchema({"oneOf": [_VECTOR_SCHEMA, _NAMED_SCHEMA]})]
BatchVectors = Annotated[Any, PlainValidator(parse_batch_vectors), WithJsonSchema(
    {"oneOf": [{"type": "array", "items": _VECTOR_SCHEMA},
               {"type": "object", "additionalProperties": {"type": "array"}}]})]
