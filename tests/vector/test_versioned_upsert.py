"""Versioned upserts: the idempotent write of at-least-once pipelines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import peregrine
from peregrine.vector.errors import InvalidPayloadError


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)


@pytest.mark.parametrize("sealed", [False, True])
def test_only_newer_versions_are_written(tmp_path: Path, sealed: bool) -> None:
    db = peregrine.open(tmp_path)
    col = db.create_collection("c", 4, "dot")
    v1, v2 = _vectors(3, 1), _vectors(3, 2)
    col.upsert([1, 2, 3], v1, [{"_seq": 10, "tag": "a"}] * 3, version_key="_seq")
    if sealed:
        col.optimize()
    # 1 older, 2 the same (a redelivery), 3 newer.
    col.upsert([1, 2, 3], v2, [{"_seq": 9, "tag": "old"}, {"_seq": 10, "tag": "dup"},
                               {"_seq": 11, "tag": "new"}], version_key="_seq")
    got = {r.id: r for r in col.retrieve([1, 2, 3], with_vectors=True)}
    assert [got[i].payload["tag"] for i in (1, 2, 3)] == ["a", "a", "new"]
    np.testing.assert_allclose(np.asarray(got[1].vector, dtype=np.float32), v1[0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(got[3].vector, dtype=np.float32), v2[2], rtol=1e-6)
    assert col.count() == 3
    db.close()
    # The skipped writes were never logged: a reopen replays the same state.
    db = peregrine.open(tmp_path)
    assert [r.payload["tag"] for r in db.collection("c").retrieve([1, 2, 3])] == [
        "a", "a", "new"]
    db.close()


def test_every_payload_needs_an_integer_version(tmp_path: Path) -> None:
    db = peregrine.open(tmp_path)
    col = db.create_collection("c", 4, "dot")
    for payloads in ([{"_seq": 1}, {"other": 2}], [{"_seq": 1}, {"_seq": True}],
                     [{"_seq": 1}, {"_seq": "3"}], None):
        with pytest.raises(InvalidPayloadError):
            col.upsert([1, 2], _vectors(2, 0), payloads, version_key="_seq")
    assert col.count() == 0
    db.close()
