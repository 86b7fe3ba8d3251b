"""Named dense vectors get HNSW graphs of their own in sealed segments.

Checked against exact numpy answers: recall of the graph walk, scores equal
to the exact ones (hits are rescored from the rows), filters and deletes
respected, points lacking the vector never returned, graphs grown when a
build extends a segment, kept across a reopen, and a segment without a graph
(built before they existed) answered by the exact scan. Each datatype's codes
(float32, float16, uint8) and Manhattan are walked too."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from peregrine.core.errors import InvalidInputError
from peregrine.vector.collection.collection import Collection
from peregrine.vector.segment.rows import pack_row
from peregrine.vector.segment.sealed import SealedSegment
from peregrine.vector.segment.side_graph import SIDE_DIR, SideGraph, write_side_graphs
from peregrine.vector.types import (
    CollectionConfig,
    DenseSpec,
    IndexConfig,
    Metric,
    Quantization,
)

DIM, IMG = 4, 16


def _config(spec: DenseSpec) -> CollectionConfig:
    return CollectionConfig("c", DIM, Metric.DOT, vector_name="main", named={"img": spec},
                            index=IndexConfig(segment_rows=4000, full_scan_threshold=50,
                                              max_segments=1, ef=64))


def _scores(metric: Metric, vectors: np.ndarray, q: np.ndarray) -> np.ndarray:
    if metric is Metric.L2:
        return -np.linalg.norm(vectors - q, axis=1)
    if metric is Metric.L1:
        return -np.abs(vectors - q).sum(axis=1)
    if metric is Metric.COSINE:
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        q = q / np.linalg.norm(q)
    return vectors @ q


class Data:
    def __init__(self, spec: DenseSpec, rng: np.random.Generator) -> None:
        self.spec, self.rng = spec, rng
        self.img: dict[int, np.ndarray] = {}

    def points(self, ids: range) -> tuple[list[Any], list[dict[str, Any]], list[dict[str, Any]]]:
        side = []
        for i in ids:
            if i % 5 == 0:  # lacks the vector
                side.append({})
                continue
            v = (self.rng.integers(0, 256, IMG).astype(np.float64)
                 if self.spec.datatype == "uint8" else self.rng.normal(size=IMG))
            self.img[i] = v
            side.append({"img": v.tolist()})
        vectors = [self.rng.normal(size=DIM).tolist() for _ in ids]
        return vectors, [{"g": i % 2} for i in ids], side

    def top(self, q: np.ndarray, k: int, keep: set[int] | None = None) -> list[int]:
        ids = [i for i in sorted(self.img) if keep is None or i in keep]
        scores = _scores(self.spec.metric, np.stack([self.img[i] for i in ids]), q)
        return [ids[j] for j in np.argsort(-scores, kind="stable")[:k]]

    def score(self, i: int, q: np.ndarray) -> float:
        s = float(_scores(self.spec.metric, self.img[i][None, :], q)[0])
        return -s if self.spec.metric in (Metric.L2, Metric.L1) else s


def _upsert(c: Collection, d: Data, ids: range) -> None:
    vectors, payloads, side = d.points(ids)
    c.upsert(list(ids), vectors, payloads, side=side)


def _walked(c: Collection) -> bool:
    sealed = [s for s in c.segments if isinstance(s, SealedSegment) and s.n_rows]
    return bool(sealed) and all(s.side_graph("img", IMG) is not None for s in sealed)


def _check(c: Collection, d: Data, deleted: set[int], min_recall: float) -> None:
    recalls = []
    odd = {i for i in d.img if i % 2}
    for _ in range(20):
        q = d.img[int(d.rng.choice(sorted(d.img)))] + d.rng.normal(size=IMG)
        if d.spec.datatype == "uint8":
            q = np.clip(np.round(q), 0, 255)
        keep = set(d.img) - deleted
        hits = c.search_named("img", q.tolist(), k=10)
        assert len(hits) == 10 and not {h.id for h in hits} & deleted
        assert all(h.id in d.img for h in hits)  # never a point without the vector
        for h in hits:  # rescored: the exact score of the stored vector
            assert h.score == pytest.approx(d.score(h.id, q), rel=1e-3, abs=1e-3)
        recalls.append(len({h.id for h in hits} & set(d.top(q, 10, keep))) / 10)
        flt = {"must": [{"key": "g", "match": {"value": 1}}]}
        filtered = c.search_named("img", q.tolist(), k=10, filter=flt)
        assert len(filtered) == 10 and all(h.id % 2 == 1 for h in filtered)
        recalls.append(len({h.id for h in filtered} & set(d.top(q, 10, odd & keep))) / 10)
    assert np.mean(recalls) >= min_recall, np.mean(recalls)
    if d.spec.datatype == "float32":  # exact=True is the exact answer, graph or not
        for _ in range(5):
            q = d.rng.normal(size=IMG)
            got = [h.id for h in c.search_named("img", q.tolist(), k=10, exact=True)]
            assert got == d.top(q, 10, set(d.img) - deleted)


@pytest.mark.parametrize("spec", [DenseSpec(IMG, Metric.L2), DenseSpec(IMG, Metric.COSINE,
                                  datatype="float16"), DenseSpec(IMG, Metric.L2,
                                  datatype="uint8"), DenseSpec(IMG, Metric.L1),
                                  DenseSpec(IMG, Metric.COSINE, m=8, ef_construction=40,
                                            quantization=Quantization.INT8)],
                         ids=["l2-float32", "cosine-float16", "l2-uint8", "l1", "int8-own-hnsw"])
def test_named_vector_graphs(tmp_path: Path, spec: DenseSpec) -> None:
    d = Data(spec, np.random.default_rng(11))
    c = Collection(tmp_path / "c", _config(spec), background=False)
    try:
        c.create_payload_index("g", "integer")
        _upsert(c, d, range(3000))
        c.optimize()
        assert _walked(c)
        (seg,) = [s for s in c.segments if isinstance(s, SealedSegment) and s.n_rows]
        graph = seg.side_graph("img", IMG)
        assert graph is not None  # the vector's own settings, else the collection's
        assert graph.index.hnsw.efConstruction == (spec.ef_construction or 100)
        assert graph.index.hnsw.nb_neighbors(1) == (spec.m or 16)
        coded = spec.quantization is Quantization.INT8 or (
            spec.datatype != "float32" and spec.metric is not Metric.L1)
        assert type(graph.index).__name__ == ("IndexHNSWSQ" if coded else "IndexHNSWFlat")
        _check(c, d, set(), 0.9)
        # An extension grows the segment's graph by the new rows.
        _upsert(c, d, range(3000, 3600))
        c.optimize()
        assert _walked(c) and [s.n_rows for s in c.segments if s.n_rows] == [3600]
        for i in (3001, 3333, 3599):  # a new row, found by its own vector
            assert c.search_named("img", d.img[i].tolist(), k=1)[0].id == i
        c.delete(ids=[1, 2, 3, 4])
        _check(c, d, {1, 2, 3, 4}, 0.9)
    finally:
        c.close()
    reopened = Collection(tmp_path / "c", _config(spec), background=False)
    try:
        config = _config(spec)  # the spec survives the collection's config file
        assert CollectionConfig.from_dict(config.to_dict()).named["img"] == spec
        assert _walked(reopened)
        _check(reopened, d, {1, 2, 3, 4}, 0.9)
    finally:
        reopened.close()


def test_segment_without_graph_scans_exactly(tmp_path: Path) -> None:
    spec = DenseSpec(IMG, Metric.L2)
    d = Data(spec, np.random.default_rng(5))
    c = Collection(tmp_path / "c", _config(spec), background=False)
    try:
        c.create_payload_index("g", "integer")
        _upsert(c, d, range(1000))
        c.optimize()
        directories = [s.directory for s in c.segments if isinstance(s, SealedSegment)]
    finally:
        c.close()
    for directory in directories:  # as a segment built before graphs existed
        shutil.rmtree(directory / SIDE_DIR)
    c = Collection(tmp_path / "c", _config(spec), background=False)
    try:
        assert not _walked(c)
        _check(c, d, set(), 1.0)  # the exact scan
    finally:
        c.close()


def test_changed_graph_settings_apply_to_graphs_built_from_then_on(tmp_path: Path) -> None:
    """A named vector's m and int8 codes changed after creation: an extension
    no longer grows the old graph but builds one with the new settings."""
    spec = DenseSpec(IMG, Metric.L2)
    d = Data(spec, np.random.default_rng(8))
    c = Collection(tmp_path / "c", _config(spec), background=False)
    try:
        _upsert(c, d, range(2000))
        c.optimize()
        (seg,) = [s for s in c.segments if s.n_rows]
        assert isinstance(seg, SealedSegment)
        old = seg.side_graph("img", IMG)
        assert old is not None and old.index.hnsw.nb_neighbors(1) == 16
        c.update_settings(named={"img": {"m": 8, "quantization": Quantization.INT8}})
        assert c.config.named["img"].m == 8
        with pytest.raises(InvalidInputError):
            c.update_settings(named={"nope": {"m": 8}})
        for bad in ({"m": 1}, {"m": "16"}, {"m": 16.5}, {"m": True}, {"quantization": "int4"},
                    {"ef": 10}):  # out of range or of the wrong type: nothing changes
            with pytest.raises(InvalidInputError):
                c.update_settings(named={"img": bad})
        assert c.config.named["img"].m == 8
        _upsert(c, d, range(2000, 2600))
        c.optimize()
        (seg,) = [s for s in c.segments if s.n_rows]
        assert isinstance(seg, SealedSegment) and seg.n_rows == 2600
        graph = seg.side_graph("img", IMG)
        assert graph is not None and graph.index.hnsw.nb_neighbors(1) == 8
        assert type(graph.index).__name__ == "IndexHNSWSQ" and graph.rows.size == len(d.img)
        _check(c, d, set(), 0.9)
    finally:
        c.close()


def test_int8_graph_trained_on_few_rows_is_rebuilt_not_grown(tmp_path: Path) -> None:
    """An int8 graph whose ranges were learnt from a few hundred small vectors
    would clip the rows that follow: an extension builds it anew from every row,
    so its ranges cover them (as the primary graph's int8 rule)."""
    import faiss

    spec = DenseSpec(IMG, Metric.L2, quantization=Quantization.INT8)
    config = IndexConfig()
    rng = np.random.default_rng(2)
    small = [pack_row(b"null", {"img": v}) for v in rng.normal(size=(300, IMG)) * 0.01]
    wide = [pack_row(b"null", {"img": v}) for v in rng.normal(size=(2000, IMG))]

    def add(index: Any, vectors: np.ndarray) -> None:
        index.add(vectors)

    base, grown = tmp_path / "base", tmp_path / "grown"
    base.mkdir()
    grown.mkdir()
    write_side_graphs(base, {"img": spec}, config, lambda r: small[r], 300, add)
    rows = [*small, *wide]
    write_side_graphs(grown, {"img": spec}, config, lambda r: rows[r], len(rows), add,
                      base=base, n0=300)

    def ranges(directory: Path) -> float:
        (path,) = (directory / SIDE_DIR).glob("*.faiss")
        index = faiss.read_index(str(path))  # kept alive while its storage is read
        storage = faiss.downcast_index(index.storage)
        return float(np.abs(faiss.vector_to_array(storage.sq.trained)).max())

    assert ranges(base) < 0.1 and ranges(grown) > 1.0  # trained anew on every row
    graph = SideGraph.load(grown, "img", len(rows), IMG)
    assert graph is not None and graph.rows.tolist() == list(range(len(rows)))


def test_a_damaged_graph_is_left_out_and_scanned_exactly(tmp_path: Path) -> None:
    spec = DenseSpec(IMG, Metric.L2)
    d = Data(spec, np.random.default_rng(6))
    c = Collection(tmp_path / "c", _config(spec), background=False)
    try:
        _upsert(c, d, range(1000))
        c.optimize()
        (seg,) = [s for s in c.segments if s.n_rows]
        assert isinstance(seg, SealedSegment)
        directory = seg.directory
    finally:
        c.close()
    (graph_file,) = (directory / SIDE_DIR).glob("*.faiss")
    graph_file.write_bytes(graph_file.read_bytes()[:100])  # truncated
    c = Collection(tmp_path / "c", _config(spec), background=False)
    try:
        assert not _walked(c)
        _check(c, d, set(), 1.0)  # the exact scan, no error
    finally:
        c.close()
