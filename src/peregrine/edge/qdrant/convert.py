"""Qdrant shapes <-> the vector face's typed values. Pure functions, no I/O."""

from __future__ import annotations

from typing import Any

import numpy as np

from peregrine.core.errors import InvalidInputError
from peregrine.edge.qdrant import schemas
from peregrine.edge.qdrant.layout import declared_vectors, index_values, info_vectors, layout
from peregrine.vector.service import (
    AliasAction,
    AliasInfo,
    CollectionConfig,
    CollectionInfo,
    ContextQuery,
    CreateAlias,
    DeleteAlias,
    DiscoverQuery,
    Document,
    Example,
    FormulaQuery,
    Fusion,
    Group,
    GroupLookup,
    GroupSpec,
    Hit,
    IndexConfig,
    Mmr,
    NearestQuery,
    OrderByQuery,
    Prefetch,
    Quantization,
    Query,
    ReadOptions,
    RecommendQuery,
    Record,
    RenameAlias,
    SampleRandom,
    SparseVector,
)

PROTOCOL = "qdrant"  # the key of Qdrant's declared settings in a collection's config


def with_payload(value: schemas.WithPayload | None, default: bool) -> Any:
    if value is None:
        return default
    if isinstance(value, schemas.PayloadInclude):
        return {"include": value.include}
    if isinstance(value, schemas.PayloadExclude):
        return {"exclude": value.exclude}
    return value


def with_vector(value: schemas.WithVector | None) -> bool | list[str]:
    """True/False, or the names of the vectors to return."""
    if isinstance(value, list):
        return value or False
    return bool(value)


def read_options(body: schemas.NearestOptions | schemas.QueryRequest, limit: int,
                 default_payload: bool = False, using: str | None = None) -> ReadOptions:
    params = body.params
    return ReadOptions(limit=limit, offset=body.offset or 0, filter=body.filter,
                       ef=params.hnsw_ef if params else None,
                       exact=bool(params.exact) if params else False,
                       with_payload=with_payload(body.with_payload, default_payload),
                       with_vector=with_vector(body.with_vector),
                       score_threshold=body.score_threshold,
                       lookup=_lookup(getattr(body, "lookup_from", None)),
                       using=getattr(body, "using", None) if using is None else using)


def search_vector(body: schemas.SearchRequest) -> tuple[Any, str | None]:
    """A search's query vector and the vector it names (Qdrant's NamedVector and
    NamedSparseVector forms)."""
    given = body.vector
    if isinstance(given, schemas.NamedVector):
        return given.vector, given.name
    if isinstance(given, schemas.NamedSparseVector):
        return example(given.vector), given.name
    return given, None


def example(value: Any) -> Example:
    """A query example: a point id, a dense vector, a sparse vector or a document."""
    if isinstance(value, schemas.SparseQuery):
        return SparseVector(np.asarray(value.indices, np.int64),  # type: ignore[arg-type]
                            np.asarray(value.values, np.float64))  # type: ignore[arg-type]
    if isinstance(value, schemas.DocumentQuery):
        if value.options:
            raise InvalidInputError("document options are not supported: the BM25 model "
                                    "takes none")
        return Document(value.text, value.model)
    return value  # type: ignore[no-any-return]


def _lookup(where: schemas.LookupLocation | None) -> str | None:
    return where.collection if where is not None else None


def query(body: schemas.QueryRequest | schemas.Prefetch) -> Query:
    q = body.query
    if q is None:
        return None
    if isinstance(q, schemas.FusionQuery):
        return Fusion(q.fusion)
    if isinstance(q, schemas.SampleQuery):
        return SampleRandom()
    if isinstance(q, schemas.FormulaQuery):
        return FormulaQuery(q.formula, q.defaults or {})
    if isinstance(q, schemas.OrderByQuery):
        order = q.order_by if isinstance(q.order_by, schemas.OrderBy) else \
            schemas.OrderBy(key=q.order_by)
        if isinstance(order.start_from, str):
            raise InvalidInputError("order_by.start_from: datetime values are not "
                                    "supported yet; give a number")
        return OrderByQuery(order.key, order.direction == "desc", order.start_from)
    if isinstance(q, schemas.RecommendQuery):
        return RecommendQuery(tuple(map(example, q.recommend.positive or ())),
                              tuple(map(example, q.recommend.negative or ())),
                              q.recommend.strategy or "average_vector")
    if isinstance(q, schemas.DiscoverQuery):
        return DiscoverQuery(example(q.discover.target), _pairs(q.discover.context))
    if isinstance(q, schemas.ContextQuery):
        return ContextQuery(_pairs(q.context))
    if isinstance(q, schemas.NearestQuery):
        mmr = None if q.mmr is None else Mmr(
            0.5 if q.mmr.diversity is None else q.mmr.diversity, q.mmr.candidates_limit)
        return NearestQuery(example(q.nearest), mmr)
    return NearestQuery(example(q))


def _pairs(given: list[schemas.ContextPair] | schemas.ContextPair | None
           ) -> tuple[tuple[Any, Any], ...]:
    items = given if isinstance(given, list) else [given] if given is not None else []
    return tuple((example(p.positive), example(p.negative)) for p in items)


def prefetch(body: schemas.QueryRequest | schemas.Prefetch) -> tuple[Prefetch, ...]:
    given = body.prefetch
    if given is None:
        return ()
    out = []
    for p in given if isinstance(given, list) else [given]:
        params = p.params
        out.append(Prefetch(query(p), prefetch(p), p.filter, p.limit or 10,
                            params.hnsw_ef if params else None,
                            bool(params.exact) if params else False, p.score_threshold,
                            _lookup(p.lookup_from), p.using))
    return tuple(out)


def scored_point(hit: Hit) -> dict[str, Any]:
    """Qdrant's ScoredPoint: payload and vector only when asked for."""
    point: dict[str, Any] = {"id": hit.id, "version": 0, "score": hit.score}
    if hit.payload is not None:
        point["payload"] = hit.payload
    if hit.order_value is not None:
        point["order_value"] = hit.order_value
    if hit.vector is not None:
        point["vector"] = hit.vector
    return point


def record(rec: Record) -> dict[str, Any]:
    point: dict[str, Any] = {"id": rec.id}
    if rec.payload is not None:
        point["payload"] = rec.payload
    if rec.vector is not None:
        point["vector"] = rec.vector
    if rec.order_value is not None:
        point["order_value"] = rec.order_value
    return point


def group_spec(body: schemas.SearchGroupsRequest | schemas.QueryGroupsRequest,
               limit: int) -> GroupSpec:
    look = body.with_lookup
    if isinstance(look, str):
        look = schemas.WithLookup(collection=look)
    lookup = None if look is None else GroupLookup(
        look.collection, with_payload(look.with_payload, True), with_vector(look.with_vectors))
    return GroupSpec(body.group_by, body.group_size, limit, lookup)


def groups(found: list[Group]) -> dict[str, Any]:
    return {"groups": [{"id": g.id, "hits": [scored_point(h) for h in g.hits],
                        **({"lookup": record(g.lookup)} if g.lookup is not None else {})}
                       for g in found]}


def batch_vectors(vectors: list[np.ndarray] | np.ndarray, n: int) -> Any:
    """The vectors of an upsert as rows: a list of arrays, or one binary blob of n rows."""
    if isinstance(vectors, np.ndarray) and vectors.ndim == 1:
        if n == 0 or vectors.size % n:
            raise InvalidInputError(f"binary vectors hold {vectors.size} floats, not a whole "
                                    f"vector for each of the {n} ids")
        return vectors.reshape(n, -1)
    if isinstance(vectors, np.ndarray) and vectors.size == 0:
        return vectors.reshape(0, 0)
    return vectors


def named_batch(columns: dict[str, list[Any]], n: int) -> list[dict[str, Any]]:
    """A batch's {name: [vector per point]} as each point's {name: vector}."""
    for name, column in columns.items():
        if len(column) != n:
            raise InvalidInputError(f"batch has {n} ids but {len(column)} vectors {name!r}")
    return [{name: column[i] for name, column in columns.items() if column[i] is not None}
            for i in range(n)]


def index_config(body: schemas.CreateCollection) -> IndexConfig:
    """Qdrant's collection parameters to the engine's; the primary vector's own
    settings win."""
    params = layout(body).primary
    return IndexConfig.from_dict(index_values(
        (body.hnsw_config, params.hnsw_config if params else None),
        (body.quantization_config, params.quantization_config if params else None),
        params.size if params else 1))


def index_update(body: schemas.UpdateCollection, dim: int, primary: str = "") -> dict[str, Any]:
    """The index changes of a PATCH: the collection's and the primary vector's
    HNSW and quantization settings (``named_updates`` has the other vectors')."""
    vector = (body.vectors or {}).get(primary)
    return index_values(
        (body.hnsw_config, vector.hnsw_config if vector else None),
        (body.quantization_config, vector.quantization_config if vector else None), dim)


def declared_update(body: schemas.UpdateCollection, given: dict[str, Any]) -> dict[str, Any]:
    """The protocol's declared settings after a PATCH: diffs merge into what was
    declared; metadata keys set to null are removed."""
    out = dict(given)
    diff = body.model_dump(mode="json", exclude_none=True, exclude={"vectors", "metadata"})
    for key, value in diff.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    if body.quantization_config == "Disabled":
        out.pop("quantization_config", None)
    named = "named_vectors" in out
    for name, diff_of in (body.vectors or {}).items():
        vectors = dict(out["named_vectors"].get(name, {}) if named
                       else out.get("vectors", {}))
        for key, value in diff_of.model_dump(mode="json", exclude_none=True).items():
            if key == "quantization_config" and value == "Disabled":
                vectors.pop(key, None)
            elif isinstance(value, dict) and isinstance(vectors.get(key), dict):
                vectors[key] = {**vectors[key], **value}
            else:
                vectors[key] = value
        if named:
            out["named_vectors"] = {**out["named_vectors"], name: vectors}
        else:
            out["vectors"] = vectors
    if body.metadata is not None:
        merged = {**out.get("metadata", {}), **body.metadata}
        out["metadata"] = {k: v for k, v in merged.items() if v is not None}
    return out


def named_updates(body: schemas.UpdateCollection, config: CollectionConfig
                  ) -> dict[str, dict[str, Any]]:
    """The graph settings a PATCH changes for named dense vectors other than the
    primary one (``m``, ``ef_construct``, int8 quantization or "Disabled"): the
    vector's own diff, and the collection's for what the vector never set itself
    (as Qdrant's collection-level settings apply to vectors without their own)."""
    out: dict[str, dict[str, Any]] = {}
    declared = config.declared.get(PROTOCOL, {}).get("named_vectors", {})
    for name, spec in config.named.items():
        if name == config.vector_name or spec.multi:
            continue  # the primary's go to the index; a multivector has no graph
        diff = (body.vectors or {}).get(name) or schemas.VectorParamsDiff()
        own = {**declared.get(name, {}).get("hnsw_config", {}),
               **(diff.hnsw_config.model_dump(exclude_none=True) if diff.hnsw_config else {})}
        inherited = None
        if body.hnsw_config is not None:
            inherited = schemas.HnswConfigDiff(**{
                k: v for k, v in body.hnsw_config.model_dump(exclude_none=True).items()
                if k not in own})
        own_quant = diff.quantization_config or declared.get(name, {}).get(
            "quantization_config")
        values = index_values((inherited, diff.hnsw_config),
                               (None if own_quant else body.quantization_config,
                                diff.quantization_config), config.dim)
        change = {key: Quantization(value) if key == "quantization" else value
                  for key, value in values.items()
                  if key in ("m", "ef_construction", "quantization")}
        if change:
            out[name] = change
    return out


def declared(body: schemas.CreateCollection) -> dict[str, Any]:
    """Everything the client set, as given, so that it reads back what it sent."""
    out = body.model_dump(mode="json", exclude_none=True,
                          exclude={"vectors", "sparse_vectors"})
    out.update(declared_vectors(body))
    return out


_OPTIMIZER_DEFAULTS: dict[str, Any] = {
    "deleted_threshold": 0.3, "vacuum_min_vector_number": 1000, "max_segment_size": None,
    "memmap_threshold": None, "flush_interval_sec": 5, "max_optimization_threads": None,
}


def collection_info(info: CollectionInfo) -> dict[str, Any]:
    config = info.config
    index = config.index
    dim = config.dim
    given: dict[str, Any] = config.declared.get(PROTOCOL, {})
    hints: dict[str, Any] = given.get(HINTS_KEY, {})
    quantization = ({"scalar": {"type": "int8", "always_ram": True}}
                    if index.quantization.value == "int8" else None)
    hnsw = {
        "m": index.m,
        "ef_construct": index.ef_construction,
        "full_scan_threshold": index.full_scan_threshold * 4 * dim // 1024,
        "max_indexing_threads": 0,
        "on_disk": False,
        **{k: v for k, v in given.get("hnsw_config", {}).items()
           if k in ("max_indexing_threads", "on_disk", "payload_m")},
    }
    optimizer = {**_OPTIMIZER_DEFAULTS, "default_segment_number": index.max_segments,
                 "indexing_threshold": index.segment_rows * 4 * dim // 1024,
                 **given.get("optimizers_config", {})}
    params: dict[str, Any] = {
        **info_vectors(info, given),
        "shard_number": given.get("shard_number", 1),
        "replication_factor": given.get("replication_factor", 1),
        "write_consistency_factor": given.get("write_consistency_factor", 1),
        "on_disk_payload": given.get("on_disk_payload", True),
    }
    if "sharding_method" in given:
        params["sharding_method"] = given["sharding_method"]
    result: dict[str, Any] = {
        "status": info.status if info.optimizer_error is None else "red",
        "optimizer_status": ("ok" if info.optimizer_error is None
                             else {"error": info.optimizer_error}),
        "indexed_vectors_count": info.indexed_points,
        "points_count": info.points,
        "segments_count": info.segments,
        "config": {
            "params": params,
            "hnsw_config": hnsw,
            "optimizer_config": optimizer,
            "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0,
                           **given.get("wal_config", {})},
            "quantization_config": given.get("quantization_config", quantization),
        },
        "payload_schema": {
            field: {"data_type": kind, "points": info.payload_points.get(field, 0),
                    **({"params": config.text_indexes[field].to_dict()}
                       if field in config.text_indexes else
                       {"params": {"type": kind, **hints.get(field, {}),
                                   **LAYOUT_FLAGS.get(config.layout.get(field, ""), {})}}
                       if field in hints or field in config.layout else {})}
            for field, kind in config.payload_indexes.items()
        },
    }
    if "metadata" in given:
        result["config"]["metadata"] = given["metadata"]
    return result


# The parameters Qdrant's non-text payload indexes take, all booleans, kept and
# read back. is_tenant and is_principal organise storage (the engine's payload
# layout); the others change nothing here: one sorted key array with postings
# serves both integer lookups and ranges, and indexes live in memory.
INDEX_HINTS = {
    "keyword": ("is_tenant", "on_disk", "enable_hnsw"),
    "uuid": ("is_tenant", "on_disk", "enable_hnsw"),
    "integer": ("lookup", "range", "is_principal", "on_disk", "enable_hnsw"),
    "float": ("is_principal", "on_disk", "enable_hnsw"),
    "datetime": ("is_principal", "on_disk", "enable_hnsw"),
    "bool": ("on_disk", "enable_hnsw"),
    "geo": ("on_disk", "enable_hnsw"),
}
HINTS_KEY = "payload_index_params"  # in the declared settings: field -> its parameters
LAYOUT_FLAGS = {"tenant": {"is_tenant": True}, "principal": {"is_principal": True}}


def index_layout(hints: dict[str, bool] | None) -> str | None:
    """The engine's layout role of an index with these parameters."""
    if hints and hints.get("is_tenant"):
        return "tenant"
    if hints and hints.get("is_principal"):
        return "principal"
    return None


def index_hints(kind: str, value: Any) -> dict[str, bool] | None:
    """A non-text index's parameters (without ``type``), checked; None when none."""
    if not isinstance(value, dict) or kind == "text":
        return None
    allowed = INDEX_HINTS.get(kind, ())
    hints = {k: v for k, v in value.items() if k != "type"}
    for key, flag in hints.items():
        if key not in allowed:
            raise InvalidInputError(f"field_schema: a {kind} index takes no {key!r} "
                                    f"(it takes {list(allowed)})")
        if flag is not None and not isinstance(flag, bool):
            raise InvalidInputError(f"field_schema: {key!r} is true or false")
    kept = {k: v for k, v in hints.items() if v is not None}
    return kept or None


def field_schema(value: Any) -> str:
    if value is None:
        return "keyword"
    if isinstance(value, dict):
        kind = value.get("type")
        if not isinstance(kind, str):
            raise InvalidInputError("field_schema needs a 'type'")
        return kind
    return str(value)


def update_result(wait: bool | None, seq: int = 0) -> dict[str, Any]:
    """Writes are applied (and searchable) before any answer; ``wait`` only picks the
    status word Qdrant clients expect."""
    return {"operation_id": seq, "status": "completed" if wait else "acknowledged"}


def alias_action(op: schemas.CreateAliasOperation | schemas.DeleteAliasOperation
                 | schemas.RenameAliasOperation) -> AliasAction:
    if isinstance(op, schemas.CreateAliasOperation):
        return CreateAlias(op.create_alias.alias_name, op.create_alias.collection_name)
    if isinstance(op, schemas.DeleteAliasOperation):
        return DeleteAlias(op.delete_alias.alias_name)
    return RenameAlias(op.rename_alias.old_alias_name, op.rename_alias.new_alias_name)


def aliases(infos: list[AliasInfo]) -> dict[str, Any]:
    """Qdrant's CollectionsAliasesResponse."""
    return {"aliases": [{"alias_name": i.alias, "collection_name": i.collection}
                        for i in infos]}
