"""Declaring a pipeline: a source and an ordered list of stages.

    pipeline = (
        Pipeline("clicks", source="events.clicks", key="user_id")
        .validate({"type": "object", "required": ["user_id", "text"]})
        .enrich(bucket="users", key="user_id", into="user")
        .embed("text")
        .upsert("clicks", id="click_id", payload=["user_id", "text"])
        .query("items", k=5, into="recommended")
        .emit("recommendations.{user_id}")
    )

A declaration holds no connections; ``peregrine worker module:pipeline`` (the
``Worker``) binds it to the bus and the vector store. Stage functions receive
and return the event's ``data`` (a dict for JSON and msgpack events); they may
be plain or ``async`` functions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from peregrine.core.errors import InvalidInputError
from peregrine.stream.codecs import Codec, resolve

# A value read from the event: a field name (dots reach into nested objects) or a
# function of the event's data.
Field = str | Callable[[Any], Any]

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
VERSION = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_SUBJECT = re.compile(r"^[^\s]+$")


class PermanentError(Exception):
    """Raised by a stage function for an event that no retry can fix: the event
    goes to the dead letters at once instead of being redelivered."""


def read_field(data: Any, where: Field) -> Any:
    """``where`` of ``data``: a dotted field path, or a function of the data."""
    if callable(where):
        return where(data)
    value = data
    for part in where.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(f"field {where!r} is missing")
        value = value[part]
    return value


@dataclass(frozen=True)
class Validate:
    schema: Mapping[str, Any] | type  # a JSON Schema, or a pydantic model class
    name: str = "validate"


@dataclass(frozen=True)
class Enrich:
    into: str
    key: Field
    bucket: str | None = None  # a JetStream key-value bucket ...
    lookup: Callable[[Any], Any] | None = None  # ... or a function (sync or async)
    ttl_s: float = 60.0
    max_entries: int = 100_000
    required: bool = False  # a missing entry fails the event (else ``into`` is None)
    name: str = "enrich"


@dataclass(frozen=True)
class Embed:
    text: Field
    into: str = "vector"
    embedder: Any = None  # anything with encode(list[str]) -> (n, d) float32
    name: str = "embed"


@dataclass(frozen=True)
class Upsert:
    collection: str
    id: Field
    vector: Field = "vector"
    payload: Sequence[str] | Callable[[Any], Mapping[str, Any]] | None = None
    namespace: Field | None = None  # per-tenant: ids and queries are scoped to it
    namespace_key: str = "tenant"
    create: bool = True  # create a missing collection (size of the vectors, keyword index
    distance: str = "Cosine"  # on namespace_key) with this distance
    name: str = "upsert"


@dataclass(frozen=True)
class Query:
    collection: str
    vector: Field = "vector"
    k: int = 10
    filter: Mapping[str, Any] | Callable[[Any], Mapping[str, Any] | None] | None = None
    namespace: Field | None = None
    namespace_key: str = "tenant"
    into: str = "matches"
    with_payload: bool = True
    exclude_id: Field | None = None  # leave out the point of this id (in the namespace)
    name: str = "query"


@dataclass(frozen=True)
class Emit:
    subject: str | Callable[[Any], str]  # "{field}" placeholders are filled from data
    fields: Sequence[str] | Callable[[Any], Any] | None = None  # None: the whole data
    codec: Codec | str = "json"
    name: str = "emit"


@dataclass(frozen=True)
class Map:
    fn: Callable[[Any], Any]  # data -> new data; None drops the event (acknowledged)
    batch: bool = False  # fn takes and returns a list of data
    name: str = "map"


Stage = Validate | Enrich | Embed | Upsert | Query | Emit | Map


@dataclass
class Pipeline:
    """A named pipeline: where events come from and what happens to them.

    ``name`` names the durable consumer every worker of this pipeline shares and
    the dead-letter subject. ``stream`` is the JetStream stream holding
    ``source`` (created if missing). ``key`` orders events: events with the same
    key are applied in publish order (the ``Peregrine-Key`` header when None).
    """

    name: str
    source: str
    stream: str | None = None
    codec: Codec | str = "json"
    key: Field | None = None
    event_id: Field | None = None  # default: the Nats-Msg-Id header, else stream:seq
    batch_size: int | None = None  # default: [stream] batch_size
    batch_ms: float | None = None
    max_deliver: int | None = None
    max_ack_pending: int | None = None
    ack_wait_s: float | None = None
    retry_backoff_s: tuple[float, ...] = (0.2, 1.0, 5.0)
    # The version of what the pipeline writes (e.g. its embedding model). With a
    # version, each upsert/query collection C is an alias that readers use, and the
    # pipeline writes C_<version> through its own consumer <name>_<version>. A new
    # version re-processes the stream from its start into the new collection, then
    # points the alias at it (see ``Worker``): re-embedding without downtime.
    version: str | None = None
    stages: list[Stage] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise InvalidInputError(f"pipeline name {self.name!r}: 1-64 of A-Z a-z 0-9 _ -")
        if not _SUBJECT.match(self.source):
            raise InvalidInputError(f"source subject {self.source!r} is not a subject")
        self.codec = resolve(self.codec)
        if self.stream is None:
            self.stream = "PG_" + self.name.upper().replace("-", "_")
        elif not NAME.match(self.stream):
            raise InvalidInputError(f"stream name {self.stream!r}: 1-64 of A-Z a-z 0-9 _ -")
        if self.version is not None and not VERSION.match(self.version):
            raise InvalidInputError(f"version {self.version!r}: 1-32 of A-Z a-z 0-9 _ - .")

    @property
    def consumer(self) -> str:
        """The durable consumer its workers share: one per version."""
        if self.version is None:
            return self.name
        return f"{self.name}_{self.version}".replace(".", "_")

    def collection_of(self, collection: str) -> str:
        """The collection this version writes and reads for a stage's ``collection``."""
        return collection if self.version is None else f"{collection}_{self.version}"

    def _add(self, stage: Stage) -> Pipeline:
        names = {s.name for s in self.stages}
        if stage.name in names:
            stage = type(stage)(**{**stage.__dict__, "name": f"{stage.name}{len(self.stages)}"})
        self.stages.append(stage)
        return self

    def validate(self, schema: Mapping[str, Any] | type) -> Pipeline:
        return self._add(Validate(schema))

    def enrich(self, into: str, key: Field, bucket: str | None = None,
               lookup: Callable[[Any], Any] | None = None, ttl_s: float = 60.0,
               max_entries: int = 100_000, required: bool = False) -> Pipeline:
        if (bucket is None) == (lookup is None):
            raise InvalidInputError("enrich needs exactly one of bucket= or lookup=")
        return self._add(Enrich(into, key, bucket, lookup, ttl_s, max_entries, required))

    def embed(self, text: Field, into: str = "vector", embedder: Any = None) -> Pipeline:
        return self._add(Embed(text, into, embedder))

    def upsert(self, collection: str, id: Field, vector: Field = "vector",
               payload: Sequence[str] | Callable[[Any], Mapping[str, Any]] | None = None,
               namespace: Field | None = None, namespace_key: str = "tenant",
               create: bool = True, distance: str = "Cosine") -> Pipeline:
        if distance.capitalize() not in ("Cosine", "Dot", "Euclid", "Manhattan"):
            raise InvalidInputError(f"distance {distance!r}: Cosine, Dot, Euclid or Manhattan")
        return self._add(Upsert(collection, id, vector, payload, namespace, namespace_key,
                                create, distance.capitalize()))

    def query(self, collection: str, vector: Field = "vector", k: int = 10,
              filter: Mapping[str, Any] | Callable[[Any], Mapping[str, Any] | None] | None = None,
              into: str = "matches", namespace: Field | None = None,
              namespace_key: str = "tenant", with_payload: bool = True,
              exclude_id: Field | None = None) -> Pipeline:
        if not 1 <= k <= 1000:
            raise InvalidInputError("query k must be 1..1000")
        return self._add(Query(collection, vector, k, filter, namespace, namespace_key, into,
                               with_payload, exclude_id))

    def emit(self, subject: str | Callable[[Any], str],
             fields: Sequence[str] | Callable[[Any], Any] | None = None,
             codec: Codec | str = "json") -> Pipeline:
        return self._add(Emit(subject, fields, resolve(codec)))

    def map(self, fn: Callable[[Any], Any], batch: bool = False) -> Pipeline:
        return self._add(Map(fn, batch))
