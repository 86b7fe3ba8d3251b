"""Sealed segments save their sparse lists, and a reopened database loads them
instead of decoding every record; a damaged or forged file is refused (the
compiled loops index unchecked) and the lists are rebuilt from the records."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from peregrine.vector.segment import side as side_module
from peregrine.vector.types import SparseModifier, SparseVector

DIM = 4


def _sparse(i: int) -> SparseVector:
    rnd = random.Random(i)
    dims = sorted(rnd.sample(range(40), rnd.randint(1, 6)))
    return SparseVector(np.array(dims, np.uint32),
                        np.array([rnd.choice([0.5, 1.0, 2.0]) for _ in dims], np.float32))


def _oracle(ids: list[int], q: SparseVector, k: int) -> list[int]:
    weights = dict(zip(q.indices.tolist(), q.values.tolist(), strict=True))
    scored = []
    for i in ids:
        v = _sparse(i)
        hit = [w * x for d, x in zip(v.indices.tolist(), v.values.tolist(), strict=True)
               if (w := weights.get(d)) is not None]
        if hit:
            scored.append((-np.float32(sum(hit)), i))
    return [i for _, i in sorted(scored)[:k]]


def _make(open_db: Any, n: int) -> Any:
    db = open_db()
    c = db.create_collection("c", DIM, "dot", sparse={"s": SparseModifier.NONE})
    ids = list(range(n))
    c.upsert(ids, np.ones((n, DIM), np.float32), side=[{"s": _sparse(i)} for i in ids])
    c.delete([3, 4, 5])
    c.optimize()
    db.close()
    return ids


def _saved_files(db_path: Path) -> list[Path]:
    return sorted(db_path.glob("collections/c/segments/*/side/*.sparse.npz"))


def _check_queries(c: Any, ids: list[int]) -> None:
    live = [i for i in ids if i not in (3, 4, 5)]
    for seed in range(5):
        q = _sparse(1000 + seed)
        hits = c.search_named("s", q, k=7)
        assert [h.id for h in hits] == _oracle(live, q, 7)


def test_reopened_segment_loads_its_lists(open_db: Any, db_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ids = _make(open_db, 3000)
    assert len(_saved_files(db_path)) == 1
    decoded = []
    real = side_module.side_vectors
    monkeypatch.setattr(side_module, "side_vectors",
                        lambda blob: decoded.append(1) or real(blob))
    c = open_db().collection("c")
    _check_queries(c, ids)
    assert decoded == []  # nothing decoded: the lists came from the file
    # with_vectors reads the saved per-row entries
    got = {r.id: r.vector for r in c.retrieve([0, 7, 2999], with_vectors=True)}
    for i in (0, 7, 2999):
        v = _sparse(i)
        assert got[i]["s"] == {"indices": v.indices.tolist(), "values": v.values.tolist()}


def test_extension_saves_every_row(open_db: Any, db_path: Path) -> None:
    ids = _make(open_db, 2000)
    db = open_db()
    c = db.collection("c")
    more = list(range(2000, 2600))
    c.upsert(more, np.ones((len(more), DIM), np.float32), side=[{"s": _sparse(i)} for i in more])
    c.optimize()
    db.close()
    c = open_db().collection("c")
    _check_queries(c, ids + more)


@pytest.mark.parametrize("damage", ["truncated", "rows out of order", "row past the end",
                                    "not a zip"])
def test_damaged_lists_are_rebuilt_from_records(open_db: Any, db_path: Path, damage: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    ids = _make(open_db, 1500)
    (path,) = _saved_files(db_path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "not a zip":
        path.write_bytes(b"x" * 64)
    else:
        with np.load(path) as f:
            arrays = {k: f[k].copy() for k in f.files}
        rows = arrays["rows"]
        if damage == "rows out of order":
            first = int(arrays["starts"][np.argmax(np.diff(arrays["starts"]) > 2)])
            rows[first], rows[first + 1] = rows[first + 1], rows[first]
        else:
            rows[-1] = 10**6
        with path.open("wb") as out:
            np.savez(out, **arrays)
    with caplog.at_level(logging.WARNING):
        c = open_db().collection("c")
        _check_queries(c, ids)
    assert "rebuilding it from the records" in caplog.text
