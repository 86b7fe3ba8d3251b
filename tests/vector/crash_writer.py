"""Writer process for test_crash.py; the parent SIGKILLs it at random moments.

usage: python crash_writer.py DB_PATH SEED FIRST_BATCH LIVE_JSON [--no-deletes] [--side]

LIVE_JSON maps batch number -> version of the batches that exist. Batch ``b``
owns ids [b*BATCH, (b+1)*BATCH); version ``v`` of a point has payload
{"batch": b, "v": v} and vector ``vector_of(id, v)``. Before each call the
writer prints ``BEGIN <op> <batch> <version>`` and after it returns
``ACK <op> <batch> <version>`` (flushed), so every ACK the parent reads is an
acknowledged, fsync'ed (fsync="always") write.

With ``--side`` the primary vector is named ``main`` and some points lack it
(``lacks_primary``), and the collection also has a named dense vector ``img``
and a sparse vector ``s`` (IDF), which every upsert writes (``side_of``).

ops: U = upsert a new batch, O = overwrite a live batch with version+1,
D = delete a batch by filter, X = delete a batch by ids, P = optimize().
"""

from __future__ import annotations

import json
import random
import sys

import numpy as np

import peregrine
from peregrine.vector.types import DenseSpec, Metric, SparseModifier

BATCH = 50
DIM = 8
INDEX = {"segment_rows": 64, "max_segments": 2, "m": 8, "ef_construction": 32}


def vector_of(ids: np.ndarray, version: int) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.float64)[:, None]
    x = np.arange(DIM, dtype=np.float64)[None, :]
    return np.cos(x * 0.9 + ids * 0.031 + version * 2.1).astype(np.float32)


def side_of(ids: list[int], version: int) -> list[dict[str, object]]:
    """The named dense and sparse vectors of version ``version`` of points ``ids``."""
    img = vector_of(np.asarray(ids), version + 7)[:, :3]
    return [{"img": img[j].tolist(),
             "s": {"indices": [pid % 17, 100 + version % 5], "values": [version + 1.0,
                                                                      pid * 0.5]}}
            for j, pid in enumerate(ids)]


def lacks_primary(pid: int, version: int) -> bool:
    """Whether version ``version`` of point ``pid`` has no ``main`` vector (with
    ``--side``): an overwrite may add or remove it."""
    return (pid + version) % 7 == 3


def batch_ids(b: int) -> list[int]:
    return list(range(b * BATCH, (b + 1) * BATCH))


def main(argv: list[str]) -> None:
    path, seed, first = argv[1], int(argv[2]), int(argv[3])
    live = {int(b): v for b, v in json.loads(argv[4]).items()}
    deletes = "--no-deletes" not in argv
    side = "--side" in argv
    r = random.Random(seed)
    db = peregrine.open(path, fsync="always", background=True)
    layout = {"vector_name": "main", "named": {"img": DenseSpec(3, Metric.L2)},
              "sparse": {"s": SparseModifier.IDF}} if side else {}
    c = (db.collection("crash") if db.has_collection("crash")
         else db.create_collection("crash", DIM, "dot", index=INDEX, **layout))
    out = sys.stdout

    def say(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    say("READY")
    b = first
    while True:
        x = r.random()
        if x < 0.5 or len(live) < 3 or not deletes:
            op, target, version = "U", b, 0
            b += 1
        elif x < 0.7:
            target = r.choice(sorted(live))
            op, version = "O", live[target] + 1
        elif x < 0.83:
            op, target, version = "D", r.choice(sorted(live)), -1
        elif x < 0.96:
            op, target, version = "X", r.choice(sorted(live)), -1
        else:
            op, target, version = "P", -1, -1
        say(f"BEGIN {op} {target} {version}")
        if op in "UO":
            ids = batch_ids(target)
            vectors = list(vector_of(np.asarray(ids), version))
            if side:
                vectors = [None if lacks_primary(pid, version) else v
                           for pid, v in zip(ids, vectors, strict=True)]
            c.upsert(ids, vectors,
                     [{"batch": target, "v": version}] * BATCH,
                     side=side_of(ids, version) if side else None)
            live[target] = version
        elif op == "D":
            c.delete(filter={"must": [{"key": "batch", "match": {"value": target}}]})
            del live[target]
        elif op == "X":
            c.delete(ids=batch_ids(target))
            del live[target]
        else:
            c.optimize()
        say(f"ACK {op} {target} {version}")


if __name__ == "__main__":
    main(sys.argv)
