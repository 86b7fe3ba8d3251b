"""Request bodies and query strings of the Qdrant REST subset, as pydantic models.

They follow Qdrant's OpenAPI names and shapes so that its clients' bodies
validate unchanged. As in Qdrant, unknown fields of a request are ignored
(clients that send every field of a newer version keep working), except in
payload selectors, which refuse them. Fields Qdrant has but Peregrine does not
act on (sharding, replication, consistency) are accepted where they cannot
change a result, and rejected with a clear message where ignoring them would
(e.g. multivectors). No float may be NaN or infinite.

Filters are validated by the engine's compiler (one source of truth for the
filter language); ``filter_schema`` only documents them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    field_validator,
)

from peregrine.edge.http.protocol import QueryModel
from peregrine.edge.qdrant.vectors import BatchVectors, MultiVector, PointVector, Vector


class Model(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, arbitrary_types_allowed=True,
                              allow_inf_nan=False)


class Closed(Model):
    """A shape Qdrant refuses unknown fields in."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


PointId = Annotated[int, Field(ge=0, le=2**64 - 1)] | Annotated[
    str, Field(description="UUID", examples=["5c56c793-69f3-4fbf-87e6-c4bf54c28c26"])]
FilterSpec = Annotated[dict[str, Any], WithJsonSchema({"$ref": "#/components/schemas/Filter"})]
Payload = dict[str, Any]


class PayloadInclude(Closed):
    include: list[str]


class PayloadExclude(Closed):
    exclude: list[str]


WithPayload = bool | list[str] | PayloadInclude | PayloadExclude
WithVector = bool | list[str]
ShardKey = Annotated[Any, WithJsonSchema({"description": "accepted and ignored (one shard)"})]


# -- collections -------------------------------------------------------------------
class HnswConfigDiff(Model):
    m: int | None = Field(None, ge=0, le=256, description="0: no graph (a named vector "
                          "is then scanned exactly; the primary vector needs one)")
    ef_construct: int | None = Field(None, ge=4, le=4096)
    full_scan_threshold: int | None = Field(None, ge=0, description="kilobytes of vectors")
    max_indexing_threads: int | None = Field(None, ge=0)
    on_disk: bool | None = None
    payload_m: int | None = Field(None, ge=0)


class ScalarQuantizationConfig(Model):
    type: Literal["int8"]
    quantile: float | None = Field(None, ge=0.5, le=1.0)
    always_ram: bool | None = None


class ScalarQuantization(Model):
    scalar: ScalarQuantizationConfig


class MultivectorConfig(Model):
    comparator: Literal["max_sim"]


class VectorParams(Model):
    size: int = Field(ge=1, le=65536)
    distance: Literal["Cosine", "Dot", "Euclid", "Manhattan"]
    hnsw_config: HnswConfigDiff | None = None
    quantization_config: ScalarQuantization | None = None
    on_disk: bool | None = None
    datatype: Literal["float32", "float16", "uint8"] | None = None
    multivector_config: MultivectorConfig | None = None


class SparseVectorParams(Model):
    index: dict[str, Any] | None = Field(None, description="accepted and kept (one exact "
                                         "inverted index per segment)")
    modifier: Literal["idf", "none"] | None = None


class WalConfigDiff(Model):
    wal_capacity_mb: int | None = Field(None, ge=1)
    wal_segments_ahead: int | None = Field(None, ge=0)


class OptimizersConfigDiff(Model):
    deleted_threshold: float | None = Field(None, ge=0, le=1)
    vacuum_min_vector_number: int | None = Field(None, ge=0)
    default_segment_number: int | None = Field(None, ge=0)
    max_segment_size: int | None = Field(None, ge=0)
    memmap_threshold: int | None = Field(None, ge=0)
    indexing_threshold: int | None = Field(None, ge=0)
    flush_interval_sec: int | None = Field(None, ge=0)
    max_optimization_threads: int | None = Field(None, ge=0)


def _params_or_named(value: Any) -> str:
    """One vector's parameters, or a map of named ones (its keys are not parameters)."""
    if isinstance(value, VectorParams) or (isinstance(value, dict) and (
            "size" in value or "distance" in value)):
        return "params"
    return "named"


class CreateCollection(Model):
    vectors: Annotated[
        Annotated[VectorParams, Tag("params")] | Annotated[dict[str, VectorParams], Tag("named")],
        Discriminator(_params_or_named)] = Field(
        description='one unnamed vector, or vectors by name ("" is the unnamed one)')
    shard_number: Literal[1] | None = None
    sharding_method: Literal["auto"] | None = None
    replication_factor: Literal[1] | None = None
    write_consistency_factor: Literal[1] | None = None
    on_disk_payload: bool | None = None
    hnsw_config: HnswConfigDiff | None = None
    wal_config: WalConfigDiff | None = None
    optimizers_config: OptimizersConfigDiff | None = None
    quantization_config: ScalarQuantization | None = None
    sparse_vectors: Annotated[dict[str, SparseVectorParams], Field(max_length=16)] | None = None
    metadata: dict[str, Any] | None = Field(None, description="kept and reported back")

    @field_validator("vectors")
    @classmethod
    def _few_vectors(cls, value: VectorParams | dict[str, VectorParams]
                     ) -> VectorParams | dict[str, VectorParams]:
        if isinstance(value, dict) and len(value) > 16:
            raise ValueError("a collection has at most 16 vectors")
        return value

    @property
    def named_vectors(self) -> dict[str, VectorParams]:
        """The dense vectors by name ("" for the unnamed one)."""
        return {"": self.vectors} if isinstance(self.vectors, VectorParams) else self.vectors


class VectorParamsDiff(Model):
    hnsw_config: HnswConfigDiff | None = None
    quantization_config: ScalarQuantization | Literal["Disabled"] | None = None
    on_disk: bool | None = None


class UpdateCollection(Model):
    """``PATCH /collections/{c}``: what may change after creation."""

    vectors: dict[str, VectorParamsDiff] | None = Field(
        None, description="by vector name; the primary one's HNSW and quantization apply")
    optimizers_config: OptimizersConfigDiff | None = None
    params: dict[str, Any] | None = None
    hnsw_config: HnswConfigDiff | None = None
    quantization_config: ScalarQuantization | Literal["Disabled"] | None = None
    sparse_vectors: dict[str, SparseVectorParams] | None = Field(
        None, description="accepted and kept; a modifier cannot change after creation")
    strict_mode_config: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class CreateFieldIndex(Model):
    field_name: str = Field(min_length=1)
    field_schema: (
        Literal["keyword", "integer", "float", "bool", "datetime", "geo", "uuid", "text"]
        | Annotated[dict[str, Any], WithJsonSchema(
            {"type": "object", "properties": {"type": {
                "enum": ["keyword", "integer", "float", "bool", "datetime", "geo", "uuid",
                         "text"]}},
             "required": ["type"]})]
        | None
    ) = None


# -- aliases ------------------------------------------------------------------------
# Names are checked by the engine (the rule of collection names), not here.
class CreateAlias(Model):
    collection_name: str
    alias_name: str


class CreateAliasOperation(Model):
    create_alias: CreateAlias


class DeleteAlias(Model):
    alias_name: str


class DeleteAliasOperation(Model):
    delete_alias: DeleteAlias


class RenameAlias(Model):
    old_alias_name: str
    new_alias_name: str


class RenameAliasOperation(Model):
    rename_alias: RenameAlias


_ALIAS_ACTIONS = ("create_alias", "delete_alias", "rename_alias")


def _alias_action(value: Any) -> str | None:
    """Which action an object is (Qdrant's untagged enum: the key it holds)."""
    if isinstance(value, dict):
        return next((key for key in _ALIAS_ACTIONS if key in value), None)
    return next((key for key in _ALIAS_ACTIONS if hasattr(value, key)), None)


AliasOperation = Annotated[
    Annotated[CreateAliasOperation, Tag("create_alias")]
    | Annotated[DeleteAliasOperation, Tag("delete_alias")]
    | Annotated[RenameAliasOperation, Tag("rename_alias")],
    Discriminator(_alias_action)]


class ChangeAliases(Model):
    """Applied in order and atomically: all actions or none."""

    actions: list[AliasOperation]


# -- points -------------------------------------------------------------------------
class PointStruct(Model):
    id: PointId
    vector: PointVector
    payload: Payload | None = None


UpdateMode = Literal["upsert", "insert_only", "update_only"]


class PointsList(Model):
    points: list[PointStruct]
    shard_key: ShardKey = None
    update_filter: FilterSpec | None = None
    update_mode: UpdateMode | None = None


class Batch(Model):
    ids: list[PointId]
    vectors: BatchVectors
    payloads: list[Payload | None] | None = None


class PointsBatch(Model):
    batch: Batch
    shard_key: ShardKey = None
    update_filter: FilterSpec | None = None
    update_mode: UpdateMode | None = None


def _list_or_batch(value: Any) -> str:
    return "batch" if isinstance(value, dict) and "batch" in value else "points"


# An upsert body: errors are reported for the shape the body has, not for both.
UpsertBody = Annotated[
    Annotated[PointsList, Tag("points")] | Annotated[PointsBatch, Tag("batch")],
    Discriminator(_list_or_batch)]


class PointsSelector(Model):
    """Qdrant's PointIdsList | FilterSelector, as one object with exactly one of them."""

    points: list[PointId] | None = None
    filter: FilterSpec | None = None
    shard_key: ShardKey = None


class PointVectors(Model):
    id: PointId
    vector: PointVector


class UpdateVectors(Model):
    points: list[PointVectors]
    shard_key: ShardKey = None


class DeleteVectors(PointsSelector):
    vector: list[str] = Field(min_length=1)


class PointRequest(Model):
    ids: list[PointId]
    with_payload: WithPayload | None = None
    with_vector: WithVector | None = None
    shard_key: ShardKey = None


class SetPayload(Model):
    payload: Payload
    points: list[PointId] | None = None
    filter: FilterSpec | None = None
    key: str | None = None
    shard_key: ShardKey = None


class DeletePayload(Model):
    keys: list[str]
    points: list[PointId] | None = None
    filter: FilterSpec | None = None
    shard_key: ShardKey = None


# -- points/batch: Qdrant's untagged operations, each an object with one key --------
class UpsertOperation(Model):
    upsert: UpsertBody


class DeleteOperation(Model):
    delete: PointsSelector


class SetPayloadOperation(Model):
    set_payload: SetPayload


class OverwritePayloadOperation(Model):
    overwrite_payload: SetPayload


class DeletePayloadOperation(Model):
    delete_payload: DeletePayload


class ClearPayloadOperation(Model):
    clear_payload: PointsSelector


class UpdateVectorsOperation(Model):
    update_vectors: UpdateVectors


class DeleteVectorsOperation(Model):
    delete_vectors: DeleteVectors


_UPDATE_OPERATIONS = ("upsert", "delete", "set_payload", "overwrite_payload",
                      "delete_payload", "clear_payload", "update_vectors", "delete_vectors")


def _update_operation(value: Any) -> str | None:
    if isinstance(value, dict):
        return next((key for key in _UPDATE_OPERATIONS if key in value), None)
    return next((key for key in _UPDATE_OPERATIONS if hasattr(value, key)), None)


UpdateOperation = Annotated[
    Annotated[UpsertOperation, Tag("upsert")]
    | Annotated[DeleteOperation, Tag("delete")]
    | Annotated[SetPayloadOperation, Tag("set_payload")]
    | Annotated[OverwritePayloadOperation, Tag("overwrite_payload")]
    | Annotated[DeletePayloadOperation, Tag("delete_payload")]
    | Annotated[ClearPayloadOperation, Tag("clear_payload")]
    | Annotated[UpdateVectorsOperation, Tag("update_vectors")]
    | Annotated[DeleteVectorsOperation, Tag("delete_vectors")],
    Discriminator(_update_operation)]


class UpdateOperations(Model):
    """Applied in order and atomically: all operations or none."""

    operations: list[UpdateOperation]


class OrderBy(Model):
    key: str = Field(min_length=1)
    direction: Literal["asc", "desc"] | None = None
    start_from: int | float | str | None = None


class ScrollRequest(Model):
    offset: PointId | None = None
    order_by: str | OrderBy | None = None
    limit: int | None = Field(None, ge=1)
    filter: FilterSpec | None = None
    with_payload: WithPayload | None = None
    with_vector: WithVector | None = None
    shard_key: ShardKey = None


class CountRequest(Model):
    filter: FilterSpec | None = None
    exact: bool | None = None
    shard_key: ShardKey = None


class FacetRequest(Model):
    key: str = Field(min_length=1)
    limit: int = Field(10, ge=1)
    filter: FilterSpec | None = None
    exact: bool | None = None  # counts are always exact
    shard_key: ShardKey = None


class SearchMatrixRequest(Model):
    filter: FilterSpec | None = None
    sample: int | None = Field(None, ge=2)
    limit: int | None = Field(None, ge=1)
    using: str | None = None
    shard_key: ShardKey = None


class SearchParams(Model):
    hnsw_ef: int | None = Field(None, ge=1)
    exact: bool | None = None
    quantization: dict[str, Any] | None = None
    indexed_only: bool | None = None


class NearestOptions(Model):
    """What every nearest-neighbour request shares (Qdrant repeats these fields)."""

    filter: FilterSpec | None = None
    params: SearchParams | None = None
    limit: int = Field(ge=1)
    offset: int | None = Field(None, ge=0)
    with_payload: WithPayload | None = None
    with_vector: WithVector | None = None
    score_threshold: float | None = None
    shard_key: ShardKey = None


class SparseQuery(Closed):
    indices: list[Annotated[int, Field(ge=0, lt=2**32)]]
    values: list[float]


class DocumentQuery(Model):
    """Text for server-side inference (Qdrant's ``Document``): BM25 here."""

    text: str = Field(max_length=1_000_000)
    model: str = Field(min_length=1)
    options: dict[str, Any] | None = None


class NamedVector(Model):
    name: str
    vector: Vector


class NamedSparseVector(Model):
    name: str
    vector: SparseQuery


class SearchRequest(NearestOptions):
    vector: Vector | NamedVector | NamedSparseVector


class LookupLocation(Model):
    collection: str = Field(min_length=1)
    vector: str | None = None
    shard_key: ShardKey = None


class WithLookup(Model):
    collection: str = Field(min_length=1)
    with_payload: WithPayload | None = None
    with_vectors: WithVector | None = None


class Grouping(Model):
    """What the two ``.../groups`` requests add."""

    group_by: str = Field(min_length=1)
    group_size: int = Field(3, ge=1)
    with_lookup: str | WithLookup | None = None


class SearchGroupsRequest(SearchRequest, Grouping):
    pass


class SearchRequestBatch(Model):
    searches: list[SearchRequest]


Example = PointId | SparseQuery | DocumentQuery | Vector | MultiVector


Strategy = Literal["average_vector", "best_score", "sum_scores"]


class RecommendRequest(NearestOptions):
    positive: list[Example] | None = None
    negative: list[Example] | None = None
    strategy: Strategy | None = None
    lookup_from: LookupLocation | None = None
    using: str | None = None


class Mmr(Model):
    diversity: float | None = Field(None, ge=0, le=1, description="0 = relevance only")
    candidates_limit: int | None = Field(None, ge=1, description="nearest points to pick from")


class NearestQuery(Model):
    nearest: Example
    mmr: Mmr | None = None


class RecommendInput(Model):
    positive: list[Example] | None = None
    negative: list[Example] | None = None
    strategy: Strategy | None = None


class RecommendQuery(Model):
    recommend: RecommendInput


class ContextPair(Model):
    positive: Example
    negative: Example


class DiscoverInput(Model):
    target: Example
    context: list[ContextPair] | ContextPair | None = None


class DiscoverQuery(Model):
    discover: DiscoverInput


class ContextQuery(Model):
    context: list[ContextPair] | ContextPair


class OrderByQuery(Model):
    order_by: str | OrderBy


class FusionQuery(Model):
    fusion: Literal["rrf", "dbsf"]


class SampleQuery(Model):
    sample: Literal["random"]


class FormulaQuery(Model):
    """Re-scoring of the prefetched points (checked by the vector face)."""

    formula: Annotated[Any, WithJsonSchema({"description": "an expression: a number, "
                                            "$score, a payload key, a condition or an "
                                            "operation"})]
    defaults: dict[str, Any] | None = None


Query = (NearestQuery | RecommendQuery | DiscoverQuery | ContextQuery | OrderByQuery | FusionQuery
         | SampleQuery | FormulaQuery | Example)


class Prefetch(Model):
    """A stage of a query; ``QueryRequest`` is one too, with what only the top adds."""

    prefetch: list[Prefetch] | Prefetch | None = None
    query: Query | None = None
    using: str | None = None
    filter: FilterSpec | None = None
    params: SearchParams | None = None
    score_threshold: float | None = None
    limit: int | None = Field(None, ge=1)
    lookup_from: LookupLocation | None = None


class QueryRequest(Prefetch):
    offset: int | None = Field(None, ge=0)
    with_vector: WithVector | None = None
    with_payload: WithPayload | None = None
    shard_key: ShardKey = None


class QueryGroupsRequest(QueryRequest, Grouping):
    pass


class QueryRequestBatch(Model):
    searches: list[QueryRequest]


class SnapshotRecover(Model):
    location: str = Field(min_length=1)
    priority: Literal["no_sync", "snapshot", "replica"] | None = None
    checksum: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    api_key: str | None = None


# -- query strings ------------------------------------------------------------------
class WriteParams(QueryModel):
    wait: bool | None = None
    ordering: Literal["weak", "medium", "strong"] | None = None
    timeout: int | None = Field(None, ge=1)


class UpsertParams(WriteParams):
    # Peregrine's extension: write a point only over a lower stored version, the
    # integer at this payload key (idempotent writes from at-least-once pipelines).
    version_key: str | None = Field(None, min_length=1, max_length=256)


class ReadParams(QueryModel):
    consistency: str | None = None
    timeout: int | None = Field(None, ge=1)


class TelemetryParams(QueryModel):
    details_level: int | None = Field(None, ge=0)  # accepted: one level of detail here
    anonymize: bool | None = None
    timeout: int | None = Field(None, ge=1)


class TimeoutParams(QueryModel):
    timeout: int | None = Field(None, ge=1)


class SnapshotParams(QueryModel):
    wait: bool | None = None
    priority: Literal["no_sync", "snapshot", "replica"] | None = None
    checksum: str | None = None
