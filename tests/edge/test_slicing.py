"""Large JSON bodies decoded in slices give exactly what parsing them whole gives:
the same document, or the same error."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from peregrine.edge.http import slicing
from peregrine.edge.http.bodies import JSON, decode_document, decode_large_document
from peregrine.edge.http.protocol import HttpError
from peregrine.edge.qdrant import schemas
from peregrine.edge.qdrant.vectors import UpsertSlices

# Strings full of what the scan looks for: brackets, quotes, backslashes, unicode.
tricky_text = st.text(alphabet=st.sampled_from(list('ab[]{}",:\\ é\u2028🙂\n\t')), max_size=12)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=False, allow_infinity=False, width=32), tricky_text)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(tricky_text, inner, max_size=4)),
    max_leaves=12)
containers = st.one_of(st.lists(values, max_size=5), st.dictionaries(tricky_text, values,
                                                                     max_size=5))


@st.composite
def documents(draw: st.DrawFn) -> tuple[bytes, tuple[str, ...]]:
    """A root object holding, some keys down, an array of objects or arrays."""
    path = tuple(draw(st.lists(tricky_text, min_size=1, max_size=3)))
    array = draw(st.lists(containers, min_size=2, max_size=30))
    doc: Any = array
    for key in reversed(path):
        siblings = draw(st.dictionaries(tricky_text.filter(lambda k, key=key: k != key),
                                        values, max_size=3))
        doc = {**siblings, key: doc}
    indent = draw(st.sampled_from([None, 1, 2]))
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")]))
    ensure_ascii = draw(st.booleans())
    text = json.dumps(doc, indent=indent, separators=separators, ensure_ascii=ensure_ascii)
    return text.encode(), path


@pytest.fixture(autouse=True)
def tiny_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slicing, "SLICE_BYTES", 40)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_sliced_decode_equals_a_whole_parse(case: tuple[bytes, tuple[str, ...]]) -> None:
    body, _path = case
    expected = orjson.loads(body)
    assert decode_large_document(body, JSON, None) == expected
    layout = slicing.plan(body)
    if layout is not None:
        assert slicing.decode(body, layout, slicing.ListSlices(), pause=lambda: None) == expected


def _error(body: bytes) -> str:
    with pytest.raises(HttpError) as whole:
        decode_document(body, JSON)
    with pytest.raises(HttpError) as sliced:
        decode_large_document(body, JSON, None)
    assert (sliced.value.status, sliced.value.message) == (whole.value.status,
                                                           whole.value.message)
    return sliced.value.message


def _points(n: int = 40) -> bytes:
    return orjson.dumps({"points": [{"id": i, "vector": [i, 0.5, -1], "payload": {"t": "x]"}}
                                    for i in range(n)]})


def test_the_points_array_is_sliced() -> None:
    layout = slicing.plan(_points())
    assert layout is not None and layout.path == ("points",) and len(layout.slices) > 5


@given(st.integers(0, 10_000), st.sampled_from([b"", b"x", b",", b"]", b"{", b'"', b"\\"]))
@settings(max_examples=200, deadline=None)
def test_a_broken_body_gets_the_error_a_whole_parse_gives(at: int, insert: bytes) -> None:
    body = _points()
    at %= len(body)
    broken = body[:at] + insert + body[at + 1:]
    try:
        expected = orjson.loads(broken)
    except orjson.JSONDecodeError:
        assert _error(broken).startswith("Format error in JSON body")
    else:
        assert decode_large_document(broken, JSON, None) == expected


@pytest.mark.parametrize("body", [
    # A duplicate key: the last one wins, as in a whole parse.
    b'{"points": [[1], [2], [3]], "points": [[4]]}',
    b'{"points": [[4]], "points": [[1], [2], [3]]}',
    # Not only containers in the array.
    b'{"points": [[1], 7, [2], [3]]}',
    # Under a list, not an object; and a root array.
    b'{"a": [[[1], [2], [3]]]}',
    b'[[1], [2], [3], [4]]',
    # A quote escaped before a bracket.
    b'{"p": [["\\"]"], ["\\\\"], ["]\\\\\\""]]}',
])
def test_unusual_shapes_decode_like_a_whole_parse(body: bytes) -> None:
    assert decode_large_document(body, JSON, None) == orjson.loads(body)


def test_upsert_slices_turn_vectors_into_float32() -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(schemas.UpsertBody)
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((50, 6)).astype(np.float32)
    batch = orjson.dumps({"batch": {"ids": list(range(50)), "vectors": vectors.tolist()}})
    points = orjson.dumps({"points": [{"id": i, "vector": v} for i, v in
                                      enumerate(vectors.tolist())]})
    for body in (batch, points):
        whole = adapter.validate_python(orjson.loads(body))
        sliced = adapter.validate_python(decode_large_document(body, JSON, UpsertSlices()))
        assert type(whole) is type(sliced)
        if isinstance(whole, schemas.PointsBatch):
            assert sliced.batch.vectors.dtype == np.float32
            np.testing.assert_array_equal(whole.batch.vectors, sliced.batch.vectors)
        else:
            for a, b in zip(whole.points, sliced.points, strict=True):
                np.testing.assert_array_equal(a.vector, b.vector)


@pytest.mark.parametrize("vectors", [
    [[1.0, 2.0]] * 30 + [[1.0, 2.0, 3.0]] * 30,  # ragged across slices
    [[1.0, 2.0]] * 30 + [[[1.0], [2.0]]],  # nested too deep
    [[1.0, 2.0]] * 30 + [["a", "b"]],
])
def test_bad_vectors_fail_validation_as_in_a_whole_parse(vectors: list[Any]) -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(schemas.UpsertBody)
    body = orjson.dumps({"batch": {"ids": list(range(len(vectors))), "vectors": vectors}})
    with pytest.raises(ValidationError) as whole:
        adapter.validate_python(orjson.loads(body))
    with pytest.raises(ValidationError) as sliced:
        adapter.validate_python(decode_large_document(body, JSON, UpsertSlices()))
    def described(exc: ValidationError) -> list[tuple[Any, ...]]:
        return [(e["type"], e["loc"], e["msg"]) for e in exc.errors()]

    assert described(sliced.value) == described(whole.value)


def test_large_upserts_over_http_store_what_was_sent(server_factory: Any) -> None:
    """Both upsert shapes above the sliced-decoding size, through a real server; the
    vectors read back are the ones sent, and a broken large body is a 400."""
    import httpx
    from apiutil import ok

    server = server_factory()
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((1200, 64)).astype(np.float32)
    payloads = [{"t": f'row "{i}" [x]', "i": i} for i in range(1200)]
    batch = {"batch": {"ids": list(range(600)), "vectors": vectors[:600].tolist(),
                       "payloads": payloads[:600]}}
    points = {"points": [{"id": i, "vector": vectors[i].tolist(), "payload": payloads[i]}
                         for i in range(600, 1200)]}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        ok(http.put("/collections/c", json={"vectors": {"size": 64, "distance": "Dot"}}))
        for body in (batch, points):
            data = orjson.dumps(body)
            assert len(data) > 256 << 10  # decoded in slices
            ok(http.put("/collections/c/points?wait=true", content=data,
                        headers={"content-type": "application/json"}))
        got = ok(http.post("/collections/c/points", json={
            "ids": list(range(1200)), "with_vector": True, "with_payload": True}))
        by_id = {p["id"]: p for p in got}
        assert len(by_id) == 1200
        np.testing.assert_array_equal(
            np.array([by_id[i]["vector"] for i in range(1200)], dtype=np.float32), vectors)
        assert [by_id[i]["payload"] for i in range(1200)] == payloads
        broken = orjson.dumps(points)[:-2] + b"x}"
        r = http.put("/collections/c/points?wait=true", content=broken,
                     headers={"content-type": "application/json"})
        assert r.status_code == 400 and "Format error in JSON body" in r.text
