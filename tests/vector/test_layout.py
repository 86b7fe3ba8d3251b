"""Storage laid out by tenant and principal fields (Qdrant's is_tenant and
is_principal): builds group rows by tenant, ordered by the principal within
each, and everything read back through the permutation stays exact."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import orjson
import pytest

from peregrine.core.errors import InvalidInputError
from peregrine.vector.segment.layout import layout_fields, layout_order
from peregrine.vector.segment.payload_index import parse_datetime

DIM = 8


def test_order_groups_tenants_then_principal_stably() -> None:
    payloads: list[Any] = [
        {"t": "b", "at": 3}, {"t": "a", "at": 5}, {"t": "b", "at": 1}, {"at": 0},
        {"t": "a", "at": 5}, None, {"t": "a"}, {"t": ["c", "a"], "at": 2}, {"t": 7, "at": -1},
        {"t": "b", "at": 1.5},
    ]
    blobs = [b"" if p is None else orjson.dumps(p) for p in payloads]
    fields = layout_fields({"at": "principal", "t": "tenant"})
    assert fields == ["t", "at"]
    order = layout_order(lambda i: blobs[i], len(blobs), fields,
                         {"t": "keyword", "at": "integer"})
    assert order is not None
    # a: 1 (5), 4 (5, after 1: stable), 6 (no at: last among a); b: 2 (1), 9 (1.5), 0 (3);
    # c (first value of the list): 7; no usable tenant: 8 (-1), 3 (0), 5 (nothing).
    assert order.tolist() == [1, 4, 6, 2, 9, 0, 7, 8, 3, 5]
    assert layout_order(lambda i: blobs[i], 1, fields, {}) is None
    assert layout_order(lambda i: blobs[i], len(blobs), [], {}) is None


def test_datetime_principal_sorts_by_moment() -> None:
    times = ["2024-05-01T10:00:00+02:00", "2024-05-01T09:00:00Z", "2024-04-30", "not a date"]
    blobs = [orjson.dumps({"at": t}) for t in times]
    order = layout_order(lambda i: blobs[i], 4, ["at"], {"at": "datetime"})
    assert order is not None
    assert order.tolist() == [2, 0, 1, 3]  # 10:00+02:00 is 08:00Z


def _vec(pid: int) -> np.ndarray:
    return np.sin(np.arange(DIM) * 0.9 + pid * 0.37).astype(np.float32)


def _rows_in_order(c: Any) -> list[dict[str, Any]]:
    out = []
    for seg in c._holder.sealed_segments():
        out += [seg.payload(r) for r in range(seg.n_rows) if not seg.deleted[r]]
    return out


def _grouped(rows: list[dict[str, Any]]) -> bool:
    keys = [(r.get("tenant") is None, r.get("tenant") or "",
             parse_datetime(r["at"]) if "at" in r else np.inf) for r in rows]
    return keys == sorted(keys)


@pytest.mark.parametrize("reopen", [False, True])
def test_collection_builds_by_tenant_and_reads_stay_exact(open_db: Any, reopen: bool) -> None:
    db = open_db()
    c = db.create_collection("c", DIM, "dot", index={"segment_rows": 100_000, "m": 8})
    c.create_payload_index("tenant", "keyword", layout="tenant")
    c.create_payload_index("at", "datetime", layout="principal")
    rnd = random.Random(3)
    ids = list(range(1500))
    rnd.shuffle(ids)
    tenants = ["acme", "globex", "initech", "umbrella"]
    payloads = {}
    for i in ids:
        p: dict[str, Any] = {"i": i}
        if i % 17:
            p["tenant"] = rnd.choice(tenants)
        if i % 13:
            p["at"] = f"2024-0{1 + i % 9}-{10 + i % 18}T{i % 24:02d}:00:00Z"
        payloads[i] = p
    c.upsert(ids, np.stack([_vec(i) for i in ids]), [payloads[i] for i in ids])
    c.delete(ids[:40])
    c.optimize()
    if reopen:
        db.close()
        db = open_db()
        c = db.collection("c")
    rows = _rows_in_order(c)
    assert len(rows) == 1460
    assert _grouped(rows)
    live = [i for i in ids[40:]]
    matrix = np.stack([_vec(i) for i in live])
    for t in tenants:
        q = _vec(10_000 + len(t))
        hits = c.search(q, k=10, filter={"must": [{"key": "tenant", "match": {"value": t}}]},
                        exact=True, with_vectors=True)
        mine = [j for j, i in enumerate(live) if payloads[i].get("tenant") == t]
        scores = matrix[mine] @ q
        expect = [live[mine[j]] for j in np.argsort(-scores, kind="stable")[:10]]
        assert [h.id for h in hits] == expect
        for h in hits:
            assert h.payload == payloads[h.id]
            np.testing.assert_allclose(h.vector, _vec(h.id), atol=1e-6)
    got = {r.id: r for r in c.retrieve(live[:200], with_payload=True, with_vectors=True)}
    for i in live[:200]:
        assert got[i].payload == payloads[i]
        np.testing.assert_allclose(got[i].vector, _vec(i), atol=1e-6)

    # Rows added later: the extension keeps the base's rows and lays out the new ones.
    more = list(range(2000, 2300))
    c.upsert(more, np.stack([_vec(i) for i in more]),
             [{"i": i, "tenant": tenants[i % 4], "at": "2025-01-01"} for i in more])
    c.optimize()
    assert c.count() == 1760
    hits = c.search(_vec(7), k=5, filter={"must": [{"key": "tenant", "match": {"value": "acme"}}]},
                    exact=True)
    acme = [i for i in live if payloads[i].get("tenant") == "acme"] + \
        [i for i in more if i % 4 == 0]
    scores = np.stack([_vec(i) for i in acme]) @ _vec(7)
    assert [h.id for h in hits] == [acme[j] for j in np.argsort(-scores, kind="stable")[:5]]
    db.close()


def test_layout_roles_take_their_index_types(open_db: Any) -> None:
    db = open_db()
    c = db.create_collection("c", DIM, "dot")
    with pytest.raises(InvalidInputError, match="tenant"):
        c.create_payload_index("n", "integer", layout="tenant")
    with pytest.raises(InvalidInputError, match="principal"):
        c.create_payload_index("k", "keyword", layout="principal")
    with pytest.raises(InvalidInputError):
        c.create_payload_index("k", "keyword", layout="sideways")
    c.create_payload_index("k", "keyword", layout="tenant")
    c.create_payload_index("n", "integer", layout="principal")
    assert c.config.layout == {"k": "tenant", "n": "principal"}
    c.create_payload_index("k", "keyword")  # declared again without the role
    c.delete_payload_index("n")
    assert c.config.layout == {}
    db.close()
