"""Qdrant shapes <-> engine values. Pure functions, no I/O."""

from __future__ import annotations

from typing import Any

from peregrine.api import schemas
from peregrine.core.errors import InvalidInputError
from peregrine.vector.types import Hit, IndexConfig, Metric, Quantization, Record

DISTANCE_TO_METRIC = {"Cosine": Metric.COSINE, "Dot": Metric.DOT, "Euclid": Metric.L2}
METRIC_TO_DISTANCE = {v: k for k, v in DISTANCE_TO_METRIC.items()}


def with_payload(value: schemas.WithPayload | None, default: bool) -> Any:
    if value is None:
        return default
    if isinstance(value, schemas.PayloadInclude):
        return {"include": value.include}
    if isinstance(value, schemas.PayloadExclude):
        return {"exclude": value.exclude}
    return value


def with_vector(value: schemas.WithVector | None) -> bool:
    return bool(value)


def scored_point(hit: Hit) -> dict[str, Any]:
    point: dict[str, Any] = {"id": hit.id, "version": 0, "score": hit.score}
    if hit.payload is not None:
        point["payload"] = hit.payload
    if hit.vector is not None:
        point["vector"] = hit.vector
    return point


def record(rec: Record) -> dict[str, Any]:
    point: dict[str, Any] = {"id": rec.id}
    if rec.payload is not None:
        point["payload"] = rec.payload
    if rec.vector is not None:
        point["vector"] = rec.vector
    return point


def kb_to_points(kb: int, dim: int) -> int:
    return kb * 1024 // (4 * dim)


def index_config(body: schemas.CreateCollection) -> IndexConfig:
    """Qdrant's collection parameters to the engine's; vector-level ones win."""
    dim = body.vector_params.size
    values: dict[str, Any] = {}
    for hnsw in (body.hnsw_config, body.vector_params.hnsw_config):
        if hnsw is None:
            continue
        if hnsw.m is not None:
            values["m"] = hnsw.m
        if hnsw.ef_construct is not None:
            values["ef_construction"] = hnsw.ef_construct
        if hnsw.full_scan_threshold is not None:
            values["full_scan_threshold"] = kb_to_points(hnsw.full_scan_threshold, dim)
    for quant in (body.quantization_config, body.vector_params.quantization_config):
        if quant is not None:
            values["quantization"] = Quantization.INT8.value
    return IndexConfig.from_dict(values)


def collection_info(info: dict[str, Any]) -> dict[str, Any]:
    config = info["config"]
    index = config["index"]
    dim = config["dim"]
    quantization = ({"scalar": {"type": "int8", "always_ram": True}}
                    if index["quantization"] == Quantization.INT8.value else None)
    return {
        "status": "green" if info["index_backlog_segments"] == 0 else "yellow",
        "optimizer_status": "ok",
        "indexed_vectors_count": info["points"] - info["unindexed_rows"],
        "points_count": info["points"],
        "segments_count": info["segments"],
        "config": {
            "params": {
                "vectors": {"size": dim,
                            "distance": METRIC_TO_DISTANCE[Metric(config["metric"])]},
                "shard_number": 1,
                "replication_factor": 1,
                "write_consistency_factor": 1,
                "on_disk_payload": True,
            },
            "hnsw_config": {
                "m": index["m"],
                "ef_construct": index["ef_construction"],
                "full_scan_threshold": index["full_scan_threshold"] * 4 * dim // 1024,
                "max_indexing_threads": 0,
                "on_disk": False,
            },
            "optimizer_config": {
                "deleted_threshold": 0.3,
                "vacuum_min_vector_number": 1000,
                "default_segment_number": index["max_segments"],
                "max_segment_size": None,
                "memmap_threshold": None,
                "indexing_threshold": index["segment_rows"] * 4 * dim // 1024,
                "flush_interval_sec": 5,
                "max_optimization_threads": None,
            },
            "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
            "quantization_config": quantization,
        },
        "payload_schema": {
            field: {"data_type": kind, "points": info["indexed_points"].get(field, 0)}
            for field, kind in config.get("payload_indexes", {}).items()
        },
    }


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
