"""A Qdrant collection's vectors <-> the engine's layout of them.

Qdrant declares ``vectors`` as one unnamed vector's parameters or a map of
named ones, and ``sparse_vectors`` beside them. The engine serves one dense
vector as the *primary* (the unnamed one, else the first named), the other
named dense vectors with graphs of their own (their ``hnsw_config`` ``m`` and
``ef_construct`` and int8 quantization carried over, else the collection's),
and the sparse ones
exactly; this module maps one shape to the other and back, so that a client
reads back the collection it declared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peregrine.core.errors import InvalidInputError
from peregrine.edge.qdrant import schemas
from peregrine.vector.service import (
    CollectionInfo,
    DenseSpec,
    IndexConfig,
    Metric,
    Quantization,
    SparseModifier,
)

DISTANCE_TO_METRIC = {"Cosine": Metric.COSINE, "Dot": Metric.DOT, "Euclid": Metric.L2,
                      "Manhattan": Metric.L1}
METRIC_TO_DISTANCE = {v: k for k, v in DISTANCE_TO_METRIC.items()}


@dataclass(frozen=True, slots=True)
class Layout:
    """What ``create_collection`` needs besides the index settings."""

    dim: int
    metric: Metric
    vector_name: str = ""
    dense: bool = True
    named: dict[str, DenseSpec] = field(default_factory=dict)
    sparse: dict[str, SparseModifier] = field(default_factory=dict)
    primary: schemas.VectorParams | None = None  # its HNSW/quantization settings apply


def layout(body: schemas.CreateCollection) -> Layout:
    dense = body.named_vectors
    sparse = {name: SparseModifier(params.modifier or "none")
              for name, params in (body.sparse_vectors or {}).items()}
    if not dense:
        if not sparse:
            raise InvalidInputError("a collection needs at least one dense or sparse vector")
        return Layout(1, Metric.DOT, dense=False, sparse=sparse)
    if "" in dense and dense[""].multivector_config is not None:
        raise InvalidInputError("a multivector must be named (vectors: {\"name\": {...}})")
    single = [n for n, p in dense.items() if p.multivector_config is None]
    named = {n: DenseSpec(p.size, DISTANCE_TO_METRIC[p.distance],
                          p.multivector_config is not None, p.datatype or "float32",
                          *_graph_settings(p, body))
             for n, p in dense.items()}
    for n, spec in named.items():
        if spec.multi and not spec.metric.higher_is_better:
            raise InvalidInputError(f"multivector {n!r}: max_sim compares by Cosine or Dot")
    if not single:  # multivectors (and sparse vectors) only
        return Layout(1, Metric.DOT, dense=False, named=named, sparse=sparse)
    name = "" if "" in single else single[0]
    primary = dense[name]
    if primary.datatype == "uint8":
        raise InvalidInputError(f"vector {name!r} is the one the HNSW index serves: its rows "
                                "stay float32 (float16 is accepted: its graph already holds "
                                "float16 codes); uint8 applies to the other named vectors")
    del named[name]
    return Layout(primary.size, DISTANCE_TO_METRIC[primary.distance], name, True, named,
                  sparse, primary)


def _graph_settings(params: schemas.VectorParams, body: schemas.CreateCollection
                    ) -> tuple[int, int, Quantization]:
    """A named vector's graph ``m``, ``ef_construct`` and quantization: its own,
    else the collection's (Qdrant's ``hnsw_config`` / ``quantization_config``
    beside ``vectors``), else Qdrant's defaults. Explicit, so that the primary
    vector's own settings (the engine's index settings) never leak into it."""
    values = index_values((body.hnsw_config, params.hnsw_config),
                          (body.quantization_config, params.quantization_config), params.size)
    defaults = IndexConfig()
    return (values.get("m", defaults.m), values.get("ef_construction", defaults.ef_construction),
            Quantization(values.get("quantization", Quantization.NONE.value)))


def kb_to_points(kb: int, dim: int) -> int:
    return kb * 1024 // (4 * dim)


def index_values(hnsw_diffs: tuple[schemas.HnswConfigDiff | None, ...],
                  quantizations: tuple[schemas.ScalarQuantization | str | None, ...],
                  dim: int) -> dict[str, Any]:
    """Qdrant's HNSW and quantization settings as ``IndexConfig`` fields; later
    ones (the vector's own) win."""
    values: dict[str, Any] = {}
    for hnsw in hnsw_diffs:
        if hnsw is None:
            continue
        if hnsw.m is not None:
            values["m"] = hnsw.m
        if hnsw.ef_construct is not None:
            values["ef_construction"] = hnsw.ef_construct
        if hnsw.full_scan_threshold is not None:
            values["full_scan_threshold"] = kb_to_points(hnsw.full_scan_threshold, dim)
    for quant in quantizations:
        if quant is not None:
            values["quantization"] = "none" if quant == "Disabled" else "int8"
    return values


def declared_vectors(body: schemas.CreateCollection) -> dict[str, Any]:
    """The vector settings as the client gave them (kept, and read back)."""
    out: dict[str, Any] = {}
    if isinstance(body.vectors, schemas.VectorParams):
        out["vectors"] = body.vectors.model_dump(mode="json", exclude_none=True)
    else:
        out["named_vectors"] = {n: p.model_dump(mode="json", exclude_none=True)
                                for n, p in body.vectors.items()}
    if body.sparse_vectors:
        out["sparse_vectors"] = {n: p.model_dump(mode="json", exclude_none=True)
                                 for n, p in body.sparse_vectors.items()}
    return out


def info_vectors(info: CollectionInfo, given: dict[str, Any]) -> dict[str, Any]:
    """``params.vectors`` and ``params.sparse_vectors`` of the collection info."""
    config = info.config
    out: dict[str, Any] = {}
    if "named_vectors" in given or config.named or config.vector_name or not config.dense:
        declared: dict[str, Any] = given.get("named_vectors", {})
        vectors: dict[str, Any] = {}
        if config.dense:
            vectors[config.vector_name] = {
                "size": config.dim, "distance": METRIC_TO_DISTANCE[config.metric],
                **_extras(declared.get(config.vector_name, {}))}
        for name, spec in config.named.items():
            vectors[name] = {"size": spec.dim, "distance": METRIC_TO_DISTANCE[spec.metric],
                             **_extras(declared.get(name, {}))}
        out["vectors"] = vectors
    else:
        out["vectors"] = {"size": config.dim, "distance": METRIC_TO_DISTANCE[config.metric],
                          **_extras(given.get("vectors", {}))}
    if config.sparse:
        declared_sparse: dict[str, Any] = given.get("sparse_vectors", {})
        out["sparse_vectors"] = {
            name: {**declared_sparse.get(name, {}),
                   **({"modifier": "idf"} if modifier is SparseModifier.IDF else {})}
            for name, modifier in config.sparse.items()}
    return out


def _extras(declared: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in declared.items() if k not in ("size", "distance")}
