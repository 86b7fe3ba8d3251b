"""Public value types of the vector store: configs and results."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from peregrine.core.errors import InvalidInputError, StorageError
from peregrine.vector.ids import PointId
from peregrine.vector.stopwords import ENGLISH_STOPWORDS

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,254}$")
MAX_DIM = 65_536
# Kinds of declared payload indexes (the engine indexes every kind alike).
PAYLOAD_INDEX_KINDS = ("keyword", "integer", "float", "bool", "datetime", "geo", "uuid",
                       "text")
FACET_INDEX_KINDS = ("keyword", "integer", "bool", "uuid")  # the ones a facet can count


class Metric(StrEnum):
    """Distance functions; cosine is stored as normalised inner product."""

    COSINE = "cosine"
    DOT = "dot"
    L2 = "l2"
    L1 = "l1"  # Manhattan

    @property
    def higher_is_better(self) -> bool:
        return self is not Metric.L2 and self is not Metric.L1

    @classmethod
    def parse(cls, value: str | Metric) -> Metric:
        if isinstance(value, Metric):
            return value
        aliases = {"cosine": "cosine", "dot": "dot", "ip": "dot", "l2": "l2", "euclid": "l2",
                   "l1": "l1", "manhattan": "l1"}
        key = aliases.get(str(value).lower())
        if key is None:
            raise InvalidInputError(f"unknown metric {value!r}; use 'cosine', 'dot', 'l2' or "
                                    "'l1' (manhattan)")
        return cls(key)


class Quantization(StrEnum):
    """How a sealed segment stores vectors inside its ANN index."""

    NONE = "none"
    INT8 = "int8"  # scalar quantisation: 4x less RAM, rescored from float32 on disk


@dataclass(frozen=True)
class IndexConfig:
    """HNSW and storage parameters of a collection (Qdrant's hnsw_config + more)."""

    m: int = 16
    ef_construction: int = 100
    ef: int = 64
    quantization: Quantization = Quantization.NONE
    # Rows in the mutable segment before it is sealed and indexed.
    segment_rows: int = 20_000
    # Filtered queries matching at most this many points skip the graph and
    # scan the subset exactly (Qdrant's full_scan_threshold, in points).
    full_scan_threshold: int = 10_000
    # When more sealed segments than this exist, the optimizer merges them.
    max_segments: int = 4
    # Oversampling when rescoring quantized results with float32 vectors.
    rescore_factor: int = 4

    def __post_init__(self) -> None:
        checks = {
            "m": (self.m, 2, 256),
            "ef_construction": (self.ef_construction, 4, 4096),
            "ef": (self.ef, 1, 32768),
            "segment_rows": (self.segment_rows, 16, 10_000_000),
            "full_scan_threshold": (self.full_scan_threshold, 0, 1 << 40),
            "max_segments": (self.max_segments, 1, 1024),
            "rescore_factor": (self.rescore_factor, 1, 64),
        }
        for name, (value, lo, hi) in checks.items():
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise InvalidInputError(f"index.{name} must be an integer in [{lo}, {hi}]")
        object.__setattr__(self, "quantization", Quantization(self.quantization))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | IndexConfig | None) -> IndexConfig:
        if data is None:
            return cls()
        if isinstance(data, IndexConfig):
            return data
        if not isinstance(data, dict):
            raise InvalidInputError("index must be a dict of HNSW parameters")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise InvalidInputError(f"unknown index parameter(s): {sorted(unknown)}")
        kwargs = dict(data)
        if "quantization" in kwargs:
            try:
                kwargs["quantization"] = Quantization(kwargs["quantization"] or "none")
            except ValueError:
                raise InvalidInputError("index.quantization must be 'none' or 'int8'") from None
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["quantization"] = self.quantization.value
        return out


TOKENIZERS = ("word", "whitespace", "prefix", "multilingual")
MAX_PREFIX_LEN = 20  # longest prefix a prefix tokenizer stores, unless max_token_len says
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class TextIndexParams:
    """How a ``text`` payload index turns strings into tokens (``segment/text.py``)."""

    tokenizer: str = "word"
    lowercase: bool = True
    min_token_len: int | None = None
    max_token_len: int | None = None
    stopwords: tuple[str, ...] = ()  # languages ("english") and single words
    phrase_matching: bool = False
    _stop: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.tokenizer not in TOKENIZERS:
            raise InvalidInputError(f"tokenizer must be one of {list(TOKENIZERS)}")
        for name in ("min_token_len", "max_token_len"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 1 <= value <= 1000):
                raise InvalidInputError(f"{name} must be an integer in [1, 1000]")
        stop: set[str] = set()
        for word in self.stopwords:
            if word == "english":
                stop |= ENGLISH_STOPWORDS
            elif word in ("arabic", "chinese", "french", "german", "spanish", "russian"):
                raise InvalidInputError(f"stopwords: only 'english' ships with Peregrine, "
                                        f"not {word!r} (list the words as custom ones)")
            else:
                stop.add(word.lower() if self.lowercase else word)
        object.__setattr__(self, "_stop", frozenset(stop))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextIndexParams:
        """Qdrant's TextIndexParams (``type: text`` and ignored ``on_disk`` aside)."""
        known = {"type", "tokenizer", "lowercase", "min_token_len", "max_token_len",
                 "stopwords", "phrase_matching", "on_disk", "ascii_folding", "stemmer"}
        unknown = set(data) - known
        if unknown:
            raise InvalidInputError(f"unknown text index parameter(s): {sorted(unknown)}")
        if data.get("ascii_folding") or data.get("stemmer"):
            raise InvalidInputError("ascii_folding and stemmer are not supported")
        stop = data.get("stopwords")
        words: list[str] = []
        if isinstance(stop, str):
            words = [stop]
        elif isinstance(stop, dict):
            langs = stop.get("languages") or []
            custom = stop.get("custom") or []
            if not isinstance(langs, list) or not isinstance(custom, list):
                raise InvalidInputError("stopwords: {languages: [...], custom: [...]}")
            words = [*map(str, langs), *map(str, custom)]
        elif stop is not None:
            raise InvalidInputError("stopwords: a language or {languages, custom}")
        lowercase = data.get("lowercase")
        return cls(tokenizer=str(data.get("tokenizer") or "word"),
                   lowercase=True if lowercase is None else bool(lowercase),
                   min_token_len=data.get("min_token_len"),
                   max_token_len=data.get("max_token_len"),
                   stopwords=tuple(words), phrase_matching=bool(data.get("phrase_matching")))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "text", "tokenizer": self.tokenizer,
                               "lowercase": self.lowercase,
                               "phrase_matching": self.phrase_matching}
        if self.min_token_len is not None:
            out["min_token_len"] = self.min_token_len
        if self.max_token_len is not None:
            out["max_token_len"] = self.max_token_len
        if self.stopwords:
            out["stopwords"] = {"custom": list(self.stopwords)}
        return out

    def tokens(self, text: str) -> list[str]:
        """The text's tokens, in order (a query's, or a stored string's)."""
        if self.lowercase:
            text = text.lower()
        raw = text.split() if self.tokenizer == "whitespace" else _WORD.findall(text)
        lo, hi = self.min_token_len or 1, self.max_token_len
        return [t for t in raw if len(t) >= lo and (hi is None or len(t) <= hi)
                and t not in self._stop]

    def stored_tokens(self, text: str) -> list[str]:
        """What a stored string is indexed under: its tokens, and with the prefix
        tokenizer each token's prefixes too."""
        tokens = self.tokens(text)
        if self.tokenizer != "prefix":
            return tokens
        # Prefixes up to max_token_len (default 20) letters: a long token would
        # otherwise store one index entry per letter.
        lo, hi = self.min_token_len or 1, self.max_token_len or MAX_PREFIX_LEN
        return [t[:k] for t in tokens for k in range(lo, min(len(t), hi) + 1)] + [
            t for t in tokens if len(t) > hi]


@dataclass(frozen=True, slots=True)
class SparseVector:
    """A sparse vector: unique indices, ascending, and their values."""

    indices: npt.NDArray[np.uint32]
    values: npt.NDArray[np.float32]


class SparseModifier(StrEnum):
    """How a sparse vector's query weights are adjusted (Qdrant's ``modifier``)."""

    NONE = "none"
    IDF = "idf"  # each query index weighted by its inverse document frequency


@dataclass(frozen=True, slots=True)
class DenseSpec:
    """A named dense vector other than the primary one: searched exactly. With
    ``multi``, a point holds several (a matrix) and scores by MaxSim: the sum
    over the query's vectors of the best similarity among the point's."""

    dim: int
    metric: Metric
    multi: bool = False
    # How the segment indexes hold it: float16 halves the memory, uint8 (whole
    # numbers 0-255, not cosine) quarters it; scores are computed in float32.
    datatype: str = "float32"
    # Its graph in sealed segments (``segment/side_graph.py``): links per node
    # (0: no graph, scanned exactly, as Qdrant's rerank-only vectors) and build
    # beam (None: the collection's), and int8 codes (hits rescored).
    m: int | None = None
    ef_construction: int | None = None
    quantization: Quantization = Quantization.NONE

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dim": self.dim, "metric": self.metric.value}
        if self.multi:
            out["multi"] = True
        if self.datatype != "float32":
            out["datatype"] = self.datatype
        if self.m is not None:
            out["m"] = self.m
        if self.ef_construction is not None:
            out["ef_construction"] = self.ef_construction
        if self.quantization is not Quantization.NONE:
            out["quantization"] = self.quantization.value
        return out

    @staticmethod
    def from_dict(data: dict[str, Any]) -> DenseSpec:
        m, efc = data.get("m"), data.get("ef_construction")
        return DenseSpec(int(data["dim"]), Metric(data["metric"]), bool(data.get("multi", False)),
                         str(data.get("datatype", "float32")),
                         None if m is None else int(m), None if efc is None else int(efc),
                         Quantization(data.get("quantization", Quantization.NONE.value)))


MAX_VECTOR_NAMES = 16  # named dense + sparse vectors per collection
DATATYPES = ("float32", "float16", "uint8")
_VECTOR_NAME_RE = re.compile(r"^[^\x00-\x1f/]{1,64}$")


def validate_vector_name(name: Any) -> str:
    if not isinstance(name, str) or not _VECTOR_NAME_RE.fullmatch(name) or len(
            name.encode()) > 255:
        raise InvalidInputError(f"invalid vector name {name!r}: 1-64 characters (at most "
                                "255 bytes of UTF-8), no '/' or control characters")
    return name


# How an indexed payload field organises storage, and the index types each
# role takes (Qdrant's is_tenant: keyword and uuid; is_principal: integer,
# float and datetime).
LAYOUT_ROLES: dict[str, tuple[str, ...]] = {
    "tenant": ("keyword", "uuid"),
    "principal": ("integer", "float", "datetime"),
}


@dataclass(frozen=True)
class CollectionConfig:
    """A collection's shape. Its primary dense vector (``dim``, ``metric``, named
    ``vector_name``, "" when unnamed) is the one the HNSW index serves; ``named``
    dense vectors and ``sparse`` vectors ride in each row's record and are
    searched by their own exact indexes (``segment/side.py``). ``dense`` False:
    the collection has sparse vectors only (``dim`` is then a placeholder 1)."""

    name: str
    dim: int
    metric: Metric
    index: IndexConfig = field(default_factory=IndexConfig)
    # payload field -> declared index type (keyword/integer/float/bool)
    payload_indexes: dict[str, str] = field(default_factory=dict)
    # Settings a client declared that the engine accepts without acting on them
    # (Qdrant's on_disk, optimizer and WAL parameters, ...), kept per protocol so
    # that the client reads back what it set. Opaque to the engine.
    declared: dict[str, Any] = field(default_factory=dict)
    vector_name: str = ""
    dense: bool = True
    named: dict[str, DenseSpec] = field(default_factory=dict)
    sparse: dict[str, SparseModifier] = field(default_factory=dict)
    # payload field -> its full-text tokenizer (the fields indexed as "text")
    text_indexes: dict[str, TextIndexParams] = field(default_factory=dict)
    # Indexed payload fields that organise storage (Qdrant's is_tenant and
    # is_principal): field -> "tenant" or "principal". Builds lay rows out by
    # them (``segment/layout.py``).
    layout: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.metric is Metric.L1 and self.index.quantization is Quantization.INT8:
            raise InvalidInputError("int8 quantization does not serve the Manhattan distance")
        names = [self.vector_name, *self.named, *self.sparse] if self.dense else [
            *self.named, *self.sparse]
        if len(set(names)) != len(names):
            raise InvalidInputError("vector names must be unique across dense and sparse")
        if len(names) > MAX_VECTOR_NAMES:
            raise InvalidInputError(f"a collection has at most {MAX_VECTOR_NAMES} vectors")
        if not self.dense and not self.sparse and not self.named:
            raise InvalidInputError("a collection needs at least one vector")
        for name in [*self.named, *self.sparse]:
            validate_vector_name(name)
        for spec in self.named.values():
            if not 1 <= spec.dim <= MAX_DIM:
                raise InvalidInputError(f"vector size must be in [1, {MAX_DIM}]")
            if spec.multi and not spec.metric.higher_is_better:
                raise InvalidInputError("multivectors compare by Cosine or Dot (max_sim)")
            if spec.datatype not in DATATYPES or (spec.multi and spec.datatype != "float32"):
                raise InvalidInputError(f"datatype must be one of {list(DATATYPES)} (float32 "
                                        "for multivectors)")
            if spec.datatype == "uint8" and spec.metric is Metric.COSINE:
                raise InvalidInputError("uint8 vectors are not normalised: use Dot, Euclid "
                                        "or Manhattan")
            if spec.m is not None and spec.m != 0 and not 2 <= spec.m <= 256:
                raise InvalidInputError("hnsw m must be 0 (no graph) or in [2, 256]")
            if spec.ef_construction is not None and not 4 <= spec.ef_construction <= 4096:
                raise InvalidInputError("hnsw ef_construct must be in [4, 4096]")
            if spec.quantization is Quantization.INT8 and spec.metric is Metric.L1:
                raise InvalidInputError("int8 quantization does not serve the Manhattan "
                                        "distance")

    @property
    def has_side_vectors(self) -> bool:
        """Whether rows carry vectors besides the primary (named reads differ)."""
        return bool(self.named or self.sparse) or self.vector_name != "" or not self.dense

    def vector_kind(self, name: str) -> str:
        """"primary", "named" or "sparse"; an unknown name is a clear error."""
        if self.dense and name == self.vector_name:
            return "primary"
        if name in self.named:
            return "named"
        if name in self.sparse:
            return "sparse"
        known = ([self.vector_name] if self.dense else []) + [*self.named, *self.sparse]
        raise InvalidInputError(f"collection {self.name!r} has no vector named {name!r} "
                                f"(it has {known})")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "dim": self.dim,
            "metric": self.metric.value,
            "index": self.index.to_dict(),
            "payload_indexes": dict(self.payload_indexes),
        }
        if self.declared:
            out["declared"] = self.declared
        if self.vector_name:
            out["vector_name"] = self.vector_name
        if not self.dense:
            out["dense"] = False
        if self.named:
            out["named"] = {n: s.to_dict() for n, s in self.named.items()}
        if self.sparse:
            out["sparse"] = {n: m.value for n, m in self.sparse.items()}
        if self.text_indexes:
            out["text_indexes"] = {f: p.to_dict() for f, p in self.text_indexes.items()}
        if self.layout:
            out["layout"] = dict(self.layout)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> CollectionConfig:
        """Parse a stored config; anything malformed is a StorageError, never a crash."""
        try:
            if not isinstance(data, dict):
                raise TypeError(f"a config is a JSON object, not {type(data).__name__}")
            dim = data["dim"]
            if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_DIM:
                raise ValueError(f"dim {dim!r} is not an integer in [1, {MAX_DIM}]")
            indexes = data.get("payload_indexes", {})
            if not isinstance(indexes, dict) or not all(
                    isinstance(k, str) and v in PAYLOAD_INDEX_KINDS for k, v in indexes.items()):
                raise ValueError("payload_indexes must map field names to index types")
            declared = data.get("declared", {})
            if not isinstance(declared, dict):
                raise ValueError("declared must be an object")
            layout = data.get("layout", {})
            if not isinstance(layout, dict) or not all(
                    f in indexes and v in LAYOUT_ROLES for f, v in layout.items()):
                raise ValueError("layout must map indexed fields to tenant or principal")
            return cls(
                name=validate_collection_name(data["name"]),
                dim=dim,
                metric=Metric(data["metric"]),
                index=IndexConfig.from_dict(data.get("index")),
                payload_indexes=dict(indexes),
                declared=declared,
                vector_name=str(data.get("vector_name", "")),
                dense=bool(data.get("dense", True)),
                named={str(n): DenseSpec.from_dict(dict(s))
                       for n, s in dict(data.get("named", {})).items()},
                sparse={str(n): SparseModifier(m)
                        for n, m in dict(data.get("sparse", {})).items()},
                text_indexes={str(f): TextIndexParams.from_dict(p)
                              for f, p in dict(data.get("text_indexes", {})).items()},
                layout=dict(layout),
            )
        except (KeyError, TypeError, ValueError) as exc:
            reason = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise StorageError(f"invalid collection config: {reason}") from None

    def replace(self, **changes: Any) -> CollectionConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    """What a collection holds and how far its indexing is, at one instant."""

    name: str
    config: CollectionConfig
    points: int  # live points
    indexed_points: int  # live points in segments with an HNSW index
    segments: int
    sealed_segments: int
    index_backlog_segments: int  # full segments waiting for their index build
    wal_bytes: int
    # Points that carry each declared payload index field (the service fills it).
    payload_points: dict[str, int] = field(default_factory=dict)
    # "green": nothing waits for the optimizer (rows left in the mutable
    # segment below its sealing size are searched exactly by design);
    # "yellow": rows wait for a graph or a build is under way.
    status: str = "green"
    # The last optimizer failure, cleared by its next successful step.
    optimizer_error: str | None = None

    @property
    def unindexed_points(self) -> int:
        """Live points searched exactly until the optimizer indexes them."""
        return self.points - self.indexed_points

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["config"] = self.config.to_dict()
        out["unindexed_points"] = self.unindexed_points
        return out


def validate_collection_name(name: Any, what: str = "collection") -> str:
    """``name`` if it may name a collection (or, with ``what="alias"``, an alias:
    both share one namespace and one rule)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in {".", ".."}:
        raise InvalidInputError(
            f"invalid {what} name {name!r}: use 1-255 letters, digits, '_', '-' or '.'"
        )
    return name


# -- aliases: other names of a collection, changed in one atomic step -------------------
@dataclass(frozen=True, slots=True)
class CreateAlias:
    """Let ``alias`` name ``collection``; an existing alias is re-pointed (how
    readers switch to a new version of a collection in one step)."""

    alias: str
    collection: str


@dataclass(frozen=True, slots=True)
class DeleteAlias:
    """Remove ``alias``; one that does not exist is no error (as in Qdrant, so that
    "delete, then create" also works the first time)."""

    alias: str


@dataclass(frozen=True, slots=True)
class RenameAlias:
    """Give alias ``old`` the name ``new`` (an alias named ``new`` is replaced)."""

    old: str
    new: str


AliasAction = CreateAlias | DeleteAlias | RenameAlias


@dataclass(frozen=True, slots=True)
class AliasInfo:
    """One alias and the collection it names."""

    alias: str
    collection: str


@dataclass(slots=True)
class Hit:
    """One search result. For l2 the score is the distance (lower is better).

    Not frozen only because a frozen dataclass costs ~0.8 us more to build, and
    a hybrid query builds one per candidate of each prefetch; treat it as a value
    all the same."""

    id: PointId
    score: float
    payload: dict[str, Any] | None = None
    # The primary vector as a list; in a collection with named or sparse vectors,
    # {name: list | {"indices": [...], "values": [...]}}.
    vector: list[float] | dict[str, Any] | None = None
    order_value: int | float | None = None  # an order_by query's field value


@dataclass(frozen=True, slots=True)
class Record:
    """A stored point as returned by retrieve/scroll."""

    id: PointId
    payload: dict[str, Any] | None = None
    vector: list[float] | dict[str, Any] | None = None  # as in ``Hit``
    order_value: int | float | None = None  # the field value it was ordered by
