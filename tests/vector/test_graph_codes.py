"""What a sealed segment's HNSW graph stores per row, and that hits from a
float16 graph carry the exact scores of the float32 rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from vutil import METRICS, check_topk, score_tol, scores, stored_vector

import peregrine
from peregrine.vector.segment.build import graph_codes
from peregrine.vector.segment.sealed import GraphCodes, SealedSegment
from peregrine.vector.types import IndexConfig, Quantization


def _sealed(c: peregrine.Collection) -> list[SealedSegment]:
    return [seg for seg in c.segments if isinstance(seg, SealedSegment)]


def test_codes_follow_what_float16_can_carry() -> None:
    rng = np.random.default_rng(1)
    unit = rng.standard_normal((3000, 64)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    assert graph_codes(unit, IndexConfig()) is GraphCodes.FLOAT16
    assert graph_codes(unit * 1000, IndexConfig()) is GraphCodes.FLOAT16
    # Beyond float16's range (65504) one row is enough to keep float32.
    big = unit.copy()
    big[1234] *= 1e6
    assert graph_codes(big, IndexConfig()) is GraphCodes.FLOAT32
    # Rows so small that float16 keeps only a few bits of them.
    assert graph_codes(unit * 1e-7, IndexConfig()) is GraphCodes.FLOAT32
    zeros = np.zeros((10, 64), np.float32)  # zero rows survive any format
    assert graph_codes(zeros, IndexConfig()) is GraphCodes.FLOAT16
    assert graph_codes(unit, IndexConfig(quantization=Quantization.INT8)) is GraphCodes.INT8
    assert graph_codes(unit[:0], IndexConfig()) is GraphCodes.FLOAT32


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("scale", [1.0, 1e6])
def test_hits_carry_exact_scores_whatever_the_codes(
    db: peregrine.Database, metric: str, scale: float
) -> None:
    n, dim = 1500, 24
    rng = np.random.default_rng(2)
    vecs = (rng.standard_normal((n, dim)) * scale).astype(np.float32)
    c = db.create_collection("c", dim, metric, index={"segment_rows": 1024, "ef": 256})
    c.upsert(list(range(n)), vecs)
    c.optimize()
    (seg,) = _sealed(c)
    # Cosine rows are normalised before they are stored, so they always fit.
    # Manhattan graphs are always float32: FAISS's quantizers have no L1 distance.
    wanted = GraphCodes.FLOAT16 if (scale == 1.0 or metric == "cosine") and metric != "l1" \
        else GraphCodes.FLOAT32
    assert seg.codes is wanted
    stored = np.stack([stored_vector(metric, v) for v in vecs])
    for q in (rng.standard_normal((20, dim)) * scale).astype(np.float32):
        oracle = dict(enumerate(scores(metric, q, stored).tolist()))
        hits = c.search(q, k=10)
        # ef=256 over 1500 rows finds the true top 10
        check_topk(hits, oracle, 10, metric, max(score_tol(metric), 1e-5 * scale**2))
        for h in hits:
            assert h.score == pytest.approx(oracle[h.id], rel=1e-5, abs=1e-5 * scale**2)
        batch = c.search_batch(np.stack([q, -q]), k=5)
        assert [h.id for h in batch[0]] == [h.id for h in hits[:5]]


def test_filtered_walk_on_a_float16_graph_is_rescored(db: peregrine.Database) -> None:
    n, dim = 1500, 16
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    c = db.create_collection("c", dim, "dot", index={
        "segment_rows": 1024, "full_scan_threshold": 0, "ef": 128})
    c.upsert(list(range(n)), vecs, [{"m": i % 3} for i in range(n)])
    c.optimize()
    assert _sealed(c)[0].codes is GraphCodes.FLOAT16
    for q in rng.standard_normal((10, dim)).astype(np.float32):
        hits = c.search(q, k=10, filter={"must": [{"key": "m", "match": {"value": 1}}]})
        assert len(hits) == 10 and all(h.id % 3 == 1 for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        for h in hits:
            assert h.score == pytest.approx(float(vecs[h.id] @ q), rel=1e-5, abs=1e-5)


def test_segments_written_before_codes_were_recorded_load_as_before(db_path: Path) -> None:
    rng = np.random.default_rng(4)
    vecs = (rng.standard_normal((600, 8)) * 1e6).astype(np.float32)  # a float32 graph
    with peregrine.open(db_path, background=False) as db:
        c = db.create_collection("c", 8, "dot", index={"segment_rows": 512})
        c.upsert(list(range(600)), vecs)
        c.optimize()
        (seg,) = _sealed(c)
        assert seg.codes is GraphCodes.FLOAT32
        before = [(h.id, h.score) for h in c.search(vecs[3], k=10)]
        meta_path = seg.directory / "meta.json"
    meta = orjson.loads(meta_path.read_bytes())
    del meta["codes"]
    meta_path.write_bytes(orjson.dumps(meta))
    with peregrine.open(db_path, background=False) as db:
        c = db.collection("c")
        assert _sealed(c)[0].codes is GraphCodes.FLOAT32
        assert [(h.id, h.score) for h in c.search(vecs[3], k=10)] == before
