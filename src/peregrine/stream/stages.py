"""What each declared stage does to a micro-batch of events.

Every runner takes the batch and works on its live events only (not failed,
not dropped). A problem with one event fails that event (``Event.fail``); a
problem with the whole batch (the store is down) fails every live event as
transient, so it is redelivered later. Nothing here acknowledges messages: the
worker does that after the last stage, from each event's outcome.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from peregrine.core.errors import InvalidInputError, NotFoundError
from peregrine.stream import event as hdr
from peregrine.stream.codecs import Codec
from peregrine.stream.event import Event
from peregrine.stream.pipeline import (
    Embed,
    Emit,
    Enrich,
    Field,
    Map,
    PermanentError,
    Query,
    Stage,
    Upsert,
    Validate,
    read_field,
)
from peregrine.stream.sinks import VectorSink

# Written into every upserted payload: the version (stream sequence of the event,
# kept across replays) and the event's id.
VERSION_KEY = "_seq"
EVENT_ID_KEY = "_event_id"
_POINT_NS = uuid.UUID("6f1d2c1e-9a57-4d0e-b7a4-2f1f3a9c0e55")
_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.]+)\}")


def point_id(value: Any, namespace: Any = None) -> int | str:
    """A Qdrant point id for an event's id: unsigned ints stay, anything else (and
    any id in a namespace) becomes a UUID derived from it, so tenants never share ids."""
    if namespace is None and isinstance(value, int) and not isinstance(value, bool) \
            and 0 <= value < (1 << 64):
        return value
    if namespace is None and isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    scoped = f"{namespace}\x00{value}" if namespace is not None else str(value)
    return str(uuid.uuid5(_POINT_NS, scoped))


class StageRunner:
    name: str

    async def run(self, events: list[Event]) -> None:
        raise NotImplementedError


def _live(events: list[Event]) -> list[Event]:
    return [e for e in events if e.live]


def _fail_all(events: Sequence[Event], stage: str, error: BaseException) -> None:
    for e in events:
        e.fail(stage, error)


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class ValidateRunner(StageRunner):
    """JSON Schema (compiled once, by ``jsonschema_rs``) or a pydantic model; an
    invalid event is poison: dead-lettered at once."""

    def __init__(self, spec: Validate) -> None:
        self.name = spec.name
        self.model: Any = None
        self.validator: Any = None
        if isinstance(spec.schema, Mapping):
            import jsonschema_rs

            self.validator = jsonschema_rs.validator_for(dict(spec.schema))
        else:
            from pydantic import TypeAdapter

            self.model = TypeAdapter(spec.schema)

    async def run(self, events: list[Event]) -> None:
        for e in _live(events):
            try:
                if self.validator is not None:
                    errors = [f"{'/'.join(map(str, err.instance_path)) or '(root)'}: "
                              f"{err.message}" for err in self.validator.iter_errors(e.data)]
                    if errors:
                        e.fail(self.name, "; ".join(errors[:5]), permanent=True)
                else:
                    validated = self.model.validate_python(e.data)
                    dump = getattr(validated, "model_dump", None)
                    e.data = dump(mode="json") if dump else validated
            except Exception as exc:  # pydantic's ValidationError and friends
                e.fail(self.name, exc, permanent=True)


class TtlCache:
    """A bounded LRU map whose entries expire."""

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self.items: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: Any) -> tuple[bool, Any]:
        found = self.items.get(key)
        if found is None or found[0] < time.monotonic():
            self.misses += 1
            return False, None
        self.items.move_to_end(key)
        self.hits += 1
        return True, found[1]

    def put(self, key: Any, value: Any) -> None:
        self.items[key] = (time.monotonic() + self.ttl_s, value)
        self.items.move_to_end(key)
        while len(self.items) > self.max_entries:
            self.items.popitem(last=False)


class EnrichRunner(StageRunner):
    """Looks each event's key up in a JetStream key-value bucket (or a function),
    once per distinct key per batch, through a TTL cache."""

    def __init__(self, spec: Enrich, js: Any) -> None:
        self.spec, self.name, self.js = spec, spec.name, js
        self.cache = TtlCache(spec.ttl_s, spec.max_entries)
        self.kv: Any = None

    async def _fetch(self, key: str) -> Any:
        if self.spec.lookup is not None:
            return await _call(self.spec.lookup, key)
        from nats.js.errors import KeyNotFoundError

        if self.kv is None:
            self.kv = await self.js.key_value(self.spec.bucket)
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        try:
            return orjson.loads(entry.value)
        except orjson.JSONDecodeError:
            return entry.value.decode(errors="replace")

    async def run(self, events: list[Event]) -> None:
        keyed: dict[str, list[Event]] = {}
        for e in _live(events):
            try:
                keyed.setdefault(str(read_field(e.data, self.spec.key)), []).append(e)
            except (KeyError, TypeError) as exc:
                e.fail(self.name, exc, permanent=True)
        values: dict[str, Any] = {}
        missing = []
        for key in keyed:
            hit, value = self.cache.get(key)
            if hit:
                values[key] = value
            else:
                missing.append(key)
        results = await asyncio.gather(*(self._fetch(k) for k in missing),
                                       return_exceptions=True)
        for key, result in zip(missing, results, strict=True):
            if isinstance(result, BaseException):
                _fail_all(keyed[key], self.name, result)
                continue
            self.cache.put(key, result)
            values[key] = result
        for key, group in keyed.items():
            if key not in values:
                continue
            for e in group:
                if values[key] is None and self.spec.required:
                    e.fail(self.name, f"no entry for key {key!r}", permanent=True)
                else:
                    e.data[self.spec.into] = values[key]


class EmbedRunner(StageRunner):
    """Embeds one text field of every live event in one call, off the event loop
    (through the SHA-256 text cache unless the stage names its own embedder)."""

    def __init__(self, spec: Embed, default_embedder: Callable[[], Any]) -> None:
        self.spec, self.name = spec, spec.name
        self.embedder = spec.embedder or default_embedder()
        # Of the last batch, when the embedder is a CachedEmbedder (for metrics).
        self.cache_hits = self.cache_misses = 0

    async def run(self, events: list[Event]) -> None:
        texts, todo = [], []
        for e in _live(events):
            try:
                text = read_field(e.data, self.spec.text)
            except (KeyError, TypeError) as exc:
                e.fail(self.name, exc, permanent=True)
                continue
            if not isinstance(text, str):
                e.fail(self.name, f"text field is a {type(text).__name__}, not a string",
                       permanent=True)
                continue
            texts.append(text)
            todo.append(e)
        if not todo:
            return
        hits, misses = getattr(self.embedder, "hits", 0), getattr(self.embedder, "misses", 0)
        try:
            vectors = await asyncio.to_thread(self.embedder.encode, texts)
        except Exception as exc:
            _fail_all(todo, self.name, exc)
            return
        self.cache_hits = getattr(self.embedder, "hits", 0) - hits
        self.cache_misses = getattr(self.embedder, "misses", 0) - misses
        for e, row in zip(todo, np.asarray(vectors, dtype=np.float32), strict=True):
            e.data[self.spec.into] = row


def _vector_of(data: Any, where: Field) -> np.ndarray:
    value = read_field(data, where)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return np.frombuffer(value, dtype="<f4")
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim != 1 or not arr.size:
        raise InvalidInputError("the vector is not a flat, non-empty list of numbers")
    return arr


class UpsertRunner(StageRunner):
    """One versioned upsert per batch: a point is written only over an older
    version (the event's stream sequence), so redeliveries and replays are no-ops
    and an older event never overwrites a newer one."""

    def __init__(self, spec: Upsert, sink: VectorSink, collection: str | None = None) -> None:
        self.spec, self.name, self.sink = spec, spec.name, sink
        self.collection = collection or spec.collection  # a versioned pipeline's own

    def _point(self, e: Event) -> tuple[Any, np.ndarray, dict[str, Any]]:
        spec = self.spec
        namespace = read_field(e.data, spec.namespace) if spec.namespace is not None else None
        pid = point_id(read_field(e.data, spec.id), namespace)
        vector = _vector_of(e.data, spec.vector)
        if callable(spec.payload):
            payload = dict(spec.payload(e.data))
        elif spec.payload is not None:
            payload = _present(e.data, spec.payload)
        else:
            payload = {}
        payload[VERSION_KEY] = e.version
        payload[EVENT_ID_KEY] = e.event_id
        if namespace is not None:
            payload[spec.namespace_key] = namespace
        return pid, vector, payload

    async def run(self, events: list[Event]) -> None:
        # The newest event of each point wins inside the batch too.
        points: dict[Any, tuple[Event, np.ndarray, dict[str, Any]]] = {}
        written: list[Event] = []
        for e in _live(events):
            try:
                pid, vector, payload = self._point(e)
            except (KeyError, TypeError, ValueError, InvalidInputError) as exc:
                e.fail(self.name, exc, permanent=True)
                continue
            written.append(e)
            if pid not in points or points[pid][0].version < e.version:
                points[pid] = (e, vector, payload)
        if not points:
            return
        try:
            await self._write_creating(points)
        except (InvalidInputError, NotFoundError):
            # Some event is bad for the store (wrong dimension...): find it.
            for pid, item in points.items():
                try:
                    await self._write({pid: item})
                except (InvalidInputError, NotFoundError) as exc:
                    for e in written:
                        if e is item[0]:
                            e.fail(self.name, exc, permanent=True)
                except Exception as exc:
                    _fail_all(written, self.name, exc)
                    return
        except Exception as exc:
            _fail_all(written, self.name, exc)
            return
        now = time.time()
        for e in written:
            e.applied_at = now

    async def _write_creating(self, points: Mapping[Any, tuple[Event, np.ndarray,
                                                               dict[str, Any]]]) -> None:
        try:
            await self._write(points)
        except NotFoundError:
            if not self.spec.create:
                raise
            dim = next(iter(points.values()))[1].shape[0]
            keyword = [self.spec.namespace_key] if self.spec.namespace is not None else []
            await self.sink.create_collection(self.collection, dim, self.spec.distance,
                                              keyword)
            await self._write(points)

    async def _write(self, points: Mapping[Any, tuple[Event, np.ndarray, dict[str, Any]]]
                     ) -> None:
        dims = {v.shape[0] for _, v, _ in points.values()}
        if len(dims) != 1:
            raise InvalidInputError(f"vectors of different dimensions in one batch: {dims}")
        await self.sink.upsert(self.collection, list(points),
                               np.stack([v for _, v, _ in points.values()]),
                               [p for _, _, p in points.values()], VERSION_KEY)


def _present(data: Any, names: Sequence[str]) -> dict[str, Any]:
    """The named fields the data has (missing ones are left out)."""
    out: dict[str, Any] = {}
    for name in names:
        try:
            out[name] = read_field(data, name)
        except (KeyError, TypeError):
            continue
    return out


class QueryRunner(StageRunner):
    """Top-k neighbours of each live event's vector, in one batched search."""

    def __init__(self, spec: Query, sink: VectorSink, collection: str | None = None) -> None:
        self.spec, self.name, self.sink = spec, spec.name, sink
        self.collection = collection or spec.collection

    def _filter(self, data: Any) -> dict[str, Any] | None:
        spec = self.spec
        base = spec.filter(data) if callable(spec.filter) else spec.filter
        namespace = read_field(data, spec.namespace) if spec.namespace is not None else None
        if namespace is None:
            return dict(base) if base else None
        scope = {"key": spec.namespace_key, "match": {"value": namespace}}
        return {"must": [scope, dict(base)]} if base else {"must": [scope]}

    def _excluded(self, data: Any) -> Any:
        """The point id the results must not contain (``exclude_id``), or None. It
        is dropped from k + 1 hits rather than sent as a ``has_id`` filter, which
        would keep the store off its fast path for a single indexed condition."""
        spec = self.spec
        if spec.exclude_id is None:
            return None
        namespace = read_field(data, spec.namespace) if spec.namespace is not None else None
        return point_id(read_field(data, spec.exclude_id), namespace)

    async def run(self, events: list[Event]) -> None:
        todo, vectors, filters, excluded = [], [], [], []
        for e in _live(events):
            try:
                vector = _vector_of(e.data, self.spec.vector)
                where, skip = self._filter(e.data), self._excluded(e.data)
            except (KeyError, TypeError, ValueError, InvalidInputError) as exc:
                e.fail(self.name, exc, permanent=True)
                continue
            vectors.append(vector)
            filters.append(where)
            excluded.append(skip)
            todo.append(e)
        if not todo:
            return
        k = self.spec.k + (self.spec.exclude_id is not None)
        try:
            results = await self.sink.search(self.collection, np.stack(vectors), k,
                                             filters, self.spec.with_payload)
        except Exception as exc:
            _fail_all(todo, self.name, exc)
            return
        for e, hits, skip in zip(todo, results, excluded, strict=True):
            if skip is not None:
                hits = [h for h in hits if h["id"] != skip]
            e.data[self.spec.into] = hits[:self.spec.k]


class EmitRunner(StageRunner):
    """Publishes a result per event; the trace id rides along in ``traceparent`` and
    ``Nats-Msg-Id`` lets a JetStream stream on the subject drop redelivered copies."""

    def __init__(self, spec: Emit, nc: Any, pipeline: str) -> None:
        self.spec, self.name, self.nc, self.pipeline = spec, spec.name, nc, pipeline
        assert isinstance(spec.codec, Codec)
        self.codec: Codec = spec.codec

    def _subject(self, data: Any) -> str:
        if callable(self.spec.subject):
            return str(self.spec.subject(data))
        return _PLACEHOLDER.sub(lambda m: str(read_field(data, m.group(1))), self.spec.subject)

    def _body(self, data: Any) -> Any:
        fields = self.spec.fields
        if fields is None:
            return data
        if callable(fields):
            return fields(data)
        return _present(data, fields)

    async def run(self, events: list[Event]) -> None:
        sent = []
        for e in _live(events):
            try:
                subject = self._subject(e.data)
                body = self.codec.encode(self._body(e.data))
            except (KeyError, TypeError, ValueError) as exc:
                e.fail(self.name, exc, permanent=True)
                continue
            headers = {hdr.TRACEPARENT: hdr.new_traceparent(e.trace_id),
                       hdr.MSG_ID: f"{self.pipeline}:{e.event_id}:{self.name}",
                       hdr.EVENT_ID: e.event_id}
            try:
                await self.nc.publish(subject, body, headers=headers)
            except Exception as exc:
                e.fail(self.name, exc)
                continue
            sent.append(e)
        if sent:
            try:
                await self.nc.flush()
            except Exception as exc:
                _fail_all(sent, self.name, exc)


class MapRunner(StageRunner):
    """A user function per event (or per batch); ``None`` drops the event."""

    def __init__(self, spec: Map) -> None:
        self.spec, self.name = spec, spec.name

    async def run(self, events: list[Event]) -> None:
        live = _live(events)
        if self.spec.batch:
            try:
                out = await _call(self.spec.fn, [e.data for e in live])
                if len(out) != len(live):
                    raise ValueError(f"batch function returned {len(out)} items for "
                                     f"{len(live)} events")
            except PermanentError as exc:
                for e in live:
                    e.fail(self.name, exc, permanent=True)
                return
            except Exception as exc:
                _fail_all(live, self.name, exc)
                return
            for e, data in zip(live, out, strict=True):
                self._set(e, data)
            return
        for e in live:
            try:
                self._set(e, await _call(self.spec.fn, e.data))
            except PermanentError as exc:
                e.fail(self.name, exc, permanent=True)
            except Exception as exc:
                e.fail(self.name, exc)

    @staticmethod
    def _set(e: Event, data: Any) -> None:
        if data is None:
            e.dropped = True
        else:
            e.data = data


def build(stage: Stage, *, sink: VectorSink | None, nc: Any, js: Any, pipeline: str,
          default_embedder: Callable[[], Any],
          collection_of: Callable[[str], str] = str) -> StageRunner:
    """``collection_of`` maps a stage's collection to the one written and read
    (a versioned pipeline's ``<collection>_<version>``)."""
    if isinstance(stage, Validate):
        return ValidateRunner(stage)
    if isinstance(stage, Enrich):
        return EnrichRunner(stage, js)
    if isinstance(stage, Embed):
        return EmbedRunner(stage, default_embedder)
    if isinstance(stage, (Upsert, Query)):
        if sink is None:
            raise InvalidInputError(f"stage {stage.name} needs a vector store (--vector-url)")
        physical = collection_of(stage.collection)
        return UpsertRunner(stage, sink, physical) if isinstance(stage, Upsert) else (
            QueryRunner(stage, sink, physical))
    if isinstance(stage, Emit):
        return EmitRunner(stage, nc, pipeline)
    return MapRunner(stage)
