"""Points without the primary vector, in a collection of named vectors.

Qdrant's named vectors are each optional. Here the primary one (HNSW) may be
absent too: the row keeps a zero placeholder and its record says the vector
is absent, so every read of the primary vector passes it by. Checked against
a numpy oracle over mutable and sealed segments (HNSW and the exact filtered
branch), after a reopen, and through vector edits that add or remove it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from peregrine.core.errors import InvalidInputError
from peregrine.vector.collection.collection import Collection
from peregrine.vector.types import CollectionConfig, DenseSpec, IndexConfig, Metric

DIM, N = 8, 400


def _config() -> CollectionConfig:
    return CollectionConfig("c", DIM, Metric.COSINE,
                            index=IndexConfig(segment_rows=128, full_scan_threshold=16),
                            vector_name="dense", named={"img": DenseSpec(3, Metric.L2)})


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


class Oracle:
    def __init__(self, rng: np.random.Generator) -> None:
        self.dense: dict[int, np.ndarray] = {}
        self.img: dict[int, np.ndarray] = {}
        self.rng = rng

    def top(self, q: np.ndarray, k: int, ids: set[int] | None = None) -> list[int]:
        keys = [i for i in sorted(self.dense) if ids is None or i in ids]
        if not keys:
            return []
        scores = np.stack([self.dense[i] for i in keys]) @ _unit(q)
        return [keys[j] for j in np.argsort(-scores, kind="stable")[:k]]


def _check(c: Collection, o: Oracle) -> None:
    lacking = set(range(N)) - set(o.dense)
    for _ in range(10):
        q = o.rng.normal(size=DIM)
        expect = o.top(q, 10)
        assert [h.id for h in c.search(q, k=10, exact=True)] == expect
        hnsw = [h.id for h in c.search(q, k=10, ef=N)]
        assert not set(hnsw) & lacking and len(hnsw) == 10
        assert len(set(hnsw) & set(expect)) >= 9
        flt = {"must": [{"key": "g", "match": {"value": 1}}]}  # HNSW with a mask
        odd = [h.id for h in c.search(q, k=10, filter=flt, ef=N)]
        assert len(odd) == 10 and all(i % 2 and i not in lacking for i in odd)
        few = {"must": [{"has_id": list(range(12))}]}  # small enough for the exact branch
        assert [h.id for h in c.search(q, k=10, filter=few)] == o.top(q, 10, set(range(12)))
    assert c.count({"must": [{"has_vector": "dense"}]}) == len(o.dense)
    assert c.count({"must_not": [{"has_vector": "dense"}]}) == len(lacking)
    some = sorted(lacking)[:3]
    for rec in c.retrieve(some, with_vectors=True):
        assert isinstance(rec.vector, dict) and set(rec.vector) == {"img"}
    # Exact scoring by example (recommend's best_score, discover, context) skips them too.
    hits = c.scan(lambda v: v @ _unit(np.ones(DIM, np.float32)), k=N)
    assert {h.id for h in hits} == set(o.dense)


def test_points_without_the_primary_vector(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    o = Oracle(rng)
    vectors: list[Any] = []
    side = []
    for i in range(N):
        img = rng.normal(size=3)
        o.img[i] = img
        side.append({"img": img.tolist()})
        if i % 4 == 0:
            vectors.append(None)
        else:
            v = rng.normal(size=DIM)
            o.dense[i] = _unit(v)
            vectors.append(v.tolist())
    c = Collection(tmp_path / "c", _config(), background=False)
    try:
        c.create_payload_index("g", "integer")
        c.upsert(list(range(N)), vectors, [{"g": i % 2} for i in range(N)], side=side)
        _check(c, o)  # mutable segments
        c.optimize()
        _check(c, o)  # sealed, with HNSW
        # Editing vectors: the primary comes and goes; payload edits keep its absence.
        c.update_vectors([0], [{"dense": [1.0] * DIM}])
        o.dense[0] = _unit(np.ones(DIM))
        c.delete_vectors([1], ["dense"])
        del o.dense[1]
        c.set_payload([4, 1], {"x": 1})
        _check(c, o)
        (rec,) = c.retrieve([1], with_vectors=True)
        assert rec.payload == {"g": 1, "x": 1} and set(rec.vector) == {"img"}  # type: ignore[arg-type]
    finally:
        c.close()
    reopened = Collection(tmp_path / "c", _config(), background=False)
    try:
        _check(reopened, o)
        reopened.optimize()
        _check(reopened, o)
    finally:
        reopened.close()


def test_an_unnamed_vector_is_never_absent(tmp_path: Path) -> None:
    config = CollectionConfig("c", DIM, Metric.COSINE)
    c = Collection(tmp_path / "c", config, background=False)
    try:
        with pytest.raises(InvalidInputError):
            c.upsert([1, 2], [[1.0] * DIM, None])
        with pytest.raises(InvalidInputError, match="cannot be deleted"):
            c.delete_vectors([1], [""])
        assert c.count() == 0
    finally:
        c.close()
